"""The optimised expert policy gives exactly the actions of the original implementation.

`reference_actions` below is a copy of services/expert/policy.py's `expert_actions` as it was
before the table-driven rewrite (kept here only, as the oracle), with the rule changes made since
applied to it the same way (rule 4, fire discipline: fire at the rim flipper that lands in the
player's lane instead of filling every shot slot with shots down empty lanes).  Both are run on every
recorded tick in tests/data/ram_ticks.npz and on 2000 random-RAM states biased toward play and
zoom (random bytes alone are almost never in play), with and without ticks_since_zap, batched
and one state at a time.
"""
import numpy as np
import pytest

from services.expert.policy import (DANGER_DEPTH, DODGE_SPEED, FREE_FIRE_SHOTS, FUSEBALL_DEPTH, FUSEBALL_RADIUS,
                                    MAX_SHOTS, SPIN_SIGN, TARGET_FIRE_SHOTS, URGENT_DEPTH, URGENT_SHOT_DEPTH,
                                    ZAP_FIRST_COUNT, ZAP_NEAR_DEPTH, expert_actions)
from tempest_common.actions import NOOP, NUM_SPINNER, SPINNER_SPEEDS, ZAP_COOLDOWN_TICKS, ZAP_USES_PER_LEVEL
from tempest_common.game_state import (ENEMY_FLIPPER, ENEMY_FUSEBALL, ENEMY_PULSAR, ENEMY_SPIKER, ENEMY_TANKER,
                                       MODE_PLAY, MODE_ZOOM, NUM_LANES, RIM_DEPTH, GameState, decode_ram)
from tempest_common.messages import ExpertRequest
from tempest_common.wire import decode, encode
from tests.unit.recorded import FIRST_LIVES, GAME_OVER, ZOOM

# ---- reference implementation (the pre-optimisation policy, plus later rule changes) -----------
# The tuning constants are the policy's own: the reference re-expresses the rules, not the numbers.
# hunting rank per enemy type (lower = hunted first); types 5-7 (unknown) last
_RANK = np.array([1, 4, 2, 3, 0, 5, 5, 5], np.int64) * 64
assert _RANK[ENEMY_FUSEBALL] < _RANK[ENEMY_FLIPPER] < _RANK[ENEMY_TANKER] < _RANK[ENEMY_SPIKER] < _RANK[ENEMY_PULSAR]
_NONE = 1 << 20           # "no path" / "no target"

# lookup tables, [open (0 closed, 1 open), from lane, ...]
_L = np.arange(NUM_LANES)
_D = _L[None, :] - _L[:, None]
_DIST = np.stack([((_D + 8) & 15) - 8, _D])   # signed distance from -> to, as lane_distance
_ALT = np.stack([np.where(_DIST[0] != 0, _DIST[0] - 16 * np.sign(_DIST[0]), _NONE),
                 np.full_like(_D, _NONE)])                          # the long way round (closed only)
_K = np.arange(1, NUM_LANES + 1)                                    # steps 1..16
# lane index of step k ahead (+) / behind (-); 16 (always blocked) past a wall or at k = 16
_IDX_P = np.stack([np.where(_K < 16, (_L[:, None] + _K) & 15, 16),
                   np.where(_L[:, None] + _K <= 15, _L[:, None] + _K, 16)])
_IDX_M = np.stack([np.where(_K < 16, (_L[:, None] - _K) & 15, 16),
                   np.where(_L[:, None] - _K >= 0, _L[:, None] - _K, 16)])
# signed lane distance (offset 16) -> spinner index; speed 0, 3, 6, 6, 9, 9, then 12
_SPEED_BY_DIST = np.array([0, 3, 6, 6, 9, 9] + [12] * 11)
_SPIN_BY_D = np.full(33, NOOP % NUM_SPINNER, np.int64)
for _d in range(-16, 17):
    _SPIN_BY_D[_d + 16] = int(np.flatnonzero(SPINNER_SPEEDS == SPIN_SIGN * np.sign(_d) * _SPEED_BY_DIST[abs(_d)])[0])
_SPIN_DODGE = _SPIN_BY_D[16] + np.array([0, 0, 0])  # index by dodge + 1
for _d in (-1, 1):
    _SPIN_DODGE[_d + 1] = int(np.flatnonzero(SPINNER_SPEEDS == SPIN_SIGN * _d * DODGE_SPEED)[0])


def reference_actions(states: GameState, ticks_since_zap: np.ndarray | None = None) -> np.ndarray:
    """Joint action index (int16[B]) per state of a batched GameState (leading dim B)."""
    gs = states.mode
    B = gs.shape[0]
    rows = np.arange(B)
    rows_c = rows[:, None]
    pl = states.player_lane & 15
    op = states.tube_open.astype(np.intp)
    play = gs == MODE_PLAY
    zoom = gs == MODE_ZOOM
    dist_pl = _DIST[op, pl]                                      # [B, 16] player -> every lane
    spin = np.full(B, _SPIN_BY_D[16])
    zap = np.zeros(B, bool)
    n_shots = states.shots_in_flight
    worth_a_shot = np.ones(B, bool)                              # fire discipline (play only)

    if play.any():
        # -- threats: enemies, the lane a flipping one flips toward, enemy shots (T = 18) ----
        etype = states.enemy_type
        elane = states.enemy_lane & 15
        edepth = states.enemy_depth
        present = edepth != 0
        is_pulsar = etype == ENEMY_PULSAR
        lethal_pulsar = is_pulsar & present & ((states.pulsing - 1) < 0x7F)[:, None]
        fuse = (etype == ENEMY_FUSEBALL) & present & (edepth <= FUSEBALL_DEPTH)
        e_threat = ((etype == ENEMY_FLIPPER) & present | lethal_pulsar) & (edepth <= DANGER_DEPTH)
        flipping = states.enemy_between_lanes & e_threat
        elane2 = (elane + states.enemy_lane_increasing * 2 - 1) & 15
        s_threat = (states.enemy_shot_depth != 0) & (states.enemy_shot_depth < (DANGER_DEPTH + 1) << 8)
        t_lane = np.concatenate([elane, elane2, states.enemy_shot_lane & 15], axis=1)
        t_rad = np.concatenate([(e_threat | fuse) * 2 + fuse * (FUSEBALL_RADIUS - 1), flipping * 2,
                                s_threat * 2], axis=1) - 1         # -1 = inactive
        danger = (np.abs(_DIST[op[:, None], t_lane]) <= t_rad[:, :, None]).any(axis=1)   # [B, 16]
        in_lane = elane[:, :, None] == _L                                                # [B, 7, 16]
        hard = (in_lane & (lethal_pulsar | present & (edepth <= RIM_DEPTH))[:, :, None]).any(axis=1)
        blocked = np.ones((B, NUM_LANES + 1), bool)   # column 16: walls / the way round
        blocked[:, :NUM_LANES] = danger | hard

        # -- danger near the player: step away --------------------------------------------
        td = dist_pl[rows_c, t_lane]
        near = np.abs(td) <= t_rad
        left = (near & (td < 0)).any(axis=1)
        right = (near & (td > 0)).any(axis=1)
        own = (near & (td == 0)).any(axis=1) | (lethal_pulsar & (elane == pl[:, None])).any(axis=1)
        lane_m, lane_p = _IDX_M[op, pl, 0], _IDX_P[op, pl, 0]       # neighbours (16 = wall)
        hard_ext = np.concatenate([hard, np.ones((B, 1), bool)], axis=1)
        ok_m = ~left & ~hard_ext[rows, lane_m]
        ok_p = ~right & ~hard_ext[rows, lane_p]
        on = t_rad >= 0
        cost_m = (on & (td == -2)).sum(axis=1)
        cost_p = (on & (td == 2)).sum(axis=1)
        dodge = np.where(ok_p & (~ok_m | (cost_p <= cost_m)), 1, np.where(ok_m, -1, 0))
        in_danger = left | right | own

        # -- hunt ------------------------------------------------------------------------
        reach_p = blocked[rows_c, _IDX_P[op, pl]].argmax(axis=1)[:, None]   # free steps
        reach_m = blocked[rows_c, _IDX_M[op, pl]].argmax(axis=1)[:, None]
        d = dist_pl[rows_c, elane]
        alt = _ALT[op[:, None], pl[:, None], elane]
        ok = np.where(d > 0, d <= reach_p, -d <= reach_m)
        ok_alt = np.where(alt > 0, alt <= reach_p, -alt <= reach_m)
        path = np.where(ok, d, np.where(ok_alt, alt, _NONE))
        target = present & ~blocked[rows_c, elane] & (path != _NONE)
        key = np.where(target, _RANK[etype & 7] + np.abs(path), _NONE)
        best = key.argmin(axis=1)
        hunt_d = np.where(key[rows, best] < _NONE, path[rows, best], 0)
        spin = np.where(in_danger, _SPIN_DODGE[dodge + 1], _SPIN_BY_D[hunt_d + 16])

        # -- superzapper -----------------------------------------------------------------
        zaps = states.zaps_used
        zap = (((zaps == 0) & ((present & (edepth <= ZAP_NEAR_DEPTH)).sum(axis=1) >= ZAP_FIRST_COUNT))
               | ((zaps == 1) & (present & (edepth <= RIM_DEPTH)).any(axis=1))
               | (own & (dodge == 0)))
        zap &= play & (zaps < ZAP_USES_PER_LEVEL) & ~states.zapper_running
        if ticks_since_zap is not None:
            zap &= np.broadcast_to(np.asarray(ticks_since_zap), (B,)) >= ZAP_COOLDOWN_TICKS

        # -- fire discipline: is a shot worth a slot? ---------------------------------------
        # A flipping enemy's lane byte is the higher lane of its pair: lane-increasing clear means
        # it flips from its lane into lane - 1.  It is "on" the player's lane in either.
        flips_into = (elane - (states.enemy_between_lanes & ~states.enemy_lane_increasing)) & 15
        on_lane = present & ((elane == pl[:, None]) | (flips_into == pl[:, None]))
        shot_d = states.enemy_shot_depth
        urgent = ((on_lane & (edepth <= URGENT_DEPTH)).any(axis=1)
                  | (((states.enemy_shot_lane & 15) == pl[:, None]) & (shot_d != 0)
                     & (shot_d < (URGENT_SHOT_DEPTH + 1) << 8)).any(axis=1))
        target = on_lane.any(axis=1)
        worth_a_shot = np.where(play, urgent | (target & (n_shots < TARGET_FIRE_SHOTS)) | (n_shots < FREE_FIRE_SHOTS),
                                True)

    if zoom.any():
        spikes = states.spike_heights.astype(np.int64)
        free = spikes == 0
        zkey = np.where(free.any(axis=1)[:, None], (~free) << 12, (256 - spikes) << 5) + np.abs(dist_pl)
        zoom_d = dist_pl[rows, zkey.argmin(axis=1)]
        spin = np.where(zoom, _SPIN_BY_D[zoom_d + 16], spin)

    shot_free = (n_shots < MAX_SHOTS) & ((states.player_shot_depth != 0).sum(axis=1) < MAX_SHOTS)
    action = (shot_free & worth_a_shot) + 2 * zap
    action = action * NUM_SPINNER + spin
    return np.where((play | zoom) & states.player_alive, action, NOOP).astype(np.int16)


# ---- the comparison ----------------------------------------------------------------------------
def random_rams(n=2000, seed=2024):
    """Random RAM, then the bytes the policy branches on pushed toward interesting values."""
    rng = np.random.default_rng(seed)
    ram = rng.integers(0, 256, (n, 1024), dtype=np.uint8)
    ram[:, 0x00] = rng.choice([0x04, 0x04, 0x04, 0x20, 0x16, 0x12, 0x00], n)      # mostly play
    ram[:, 0x201] &= np.where(rng.random(n) < 0.85, 0x7F, 0xFF).astype(np.uint8)  # mostly alive
    ram[:, 0x111] = rng.choice([0x00, 0xFF, 0x42], n)                            # closed / open tube
    ram[:, 0x3AA] = rng.choice([0, 0, 1, 1, 2, 7], n)                            # zaps used
    ram[:, 0x125] = np.where(rng.random(n) < 0.8, 0, ram[:, 0x125])              # zapper idle
    ram[:, 0x135] = rng.integers(0, 10, n)                                       # shots in flight
    shots = ram[:, 0x2D3:0x2DB]
    shots[rng.random((n, 8)) < 0.4] = 0                                          # free shot slots
    shots[rng.random(n) < 0.2] |= 1                                              # all slots busy
    ram[:, 0x283:0x28A] = (ram[:, 0x283:0x28A] & 0xC0) | rng.integers(0, 6, (n, 7))  # enemy types 0-5
    depth = ram[:, 0x2DF:0x2E6]                                                  # empty / near / far
    depth[:] = np.where(rng.random((n, 7)) < 0.3, 0, rng.integers(1, 0x70, (n, 7)))
    ram[:, 0x2DB:0x2DF] = np.where(rng.random((n, 4)) < 0.5, 0, rng.integers(0, 0x70, (n, 4)))
    ram[:, 0x148] = rng.choice([0x00, 0x01, 0x40, 0x7F, 0x80, 0xF3], n)          # pulsing
    spikes = ram[:, 0x3AC:0x3BC]
    spikes[rng.random((n, 16)) < 0.5] = 0
    spikes[rng.random(n) < 0.3] |= 1                                             # every lane spiked
    return ram


RECORDED = np.concatenate([FIRST_LIVES, ZOOM, GAME_OVER])


@pytest.mark.parametrize("rams", [RECORDED, random_rams()], ids=["recorded", "random"])
def test_identical_to_reference(rams):
    states = decode_ram(rams)
    want = reference_actions(states)
    assert np.array_equal(expert_actions(states), want)
    assert expert_actions(states).dtype == np.int16
    ticks = np.random.default_rng(1).integers(0, 2 * ZAP_COOLDOWN_TICKS, len(rams))
    assert np.array_equal(expert_actions(states, ticks), reference_actions(states, ticks))
    assert np.array_equal(expert_actions(states, 10**6), reference_actions(states, 10**6))
    # one state at a time (the service's single-state path) and after a wire round trip
    for i in range(0, len(rams), 7):
        assert expert_actions(states[i:i + 1])[0] == want[i], i
    wired = decode(encode(ExpertRequest(1, states))).states
    assert np.array_equal(expert_actions(wired), want)


def test_random_states_exercise_the_rules():
    """The random set is not all NOOP: it reaches dodges, hunts, zaps and the zoom rule."""
    states = decode_ram(random_rams())
    actions = reference_actions(states)
    assert (actions != NOOP).mean() > 0.4
    assert len(np.unique(actions % NUM_SPINNER)) >= 8
    assert (actions // NUM_SPINNER >= 2).sum() > 50          # superzaps
    assert (states.mode == MODE_ZOOM).sum() > 200
