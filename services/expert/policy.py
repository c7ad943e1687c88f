"""The expert: a pure, rule-based Tempest policy, vectorised over a batch of GameStates.

    actions = expert_actions(states, ticks_since_zap=None)   # int16[B] joint action indices
    action = expert_action(state)                            # one unbatched state -> int

No I/O; numpy only; no Python loop over the batch.  Lane distances are measured from the
PLAYER's lane, signed, wrapping (+-8) on closed tubes and not on open ones.  The rules, in order:

0. Outside play/zoom (gamestate not 0x04/0x20), or while the player is dying: NOOP.
1. Zoom (0x20): steer to the nearest lane without a spike; if every lane has one, to the lane
   with the shortest spike (largest tip depth); fire.
2. Danger (play).  Threats: a flipper, or a pulsar while pulsars are lethal, at depth <= 0x60
   (a flipping enemy also threatens the lane it flips toward); an enemy shot whose depth high
   byte is <= 0x60; each threatens its lane +-1.  A fuseball at depth <= 0x30 threatens +-2
   lanes (keep 3 lanes away), and a lethal pulsar's whole lane is deadly at any depth.
   If threatened, step one lane away (speed 9) to a side that is not threatened, not a wall
   (open tubes: no step past lane 0 or 15) and not deadly (a lethal pulsar's lane, an enemy at
   the rim); with both sides open (own-lane threat only), the side with fewer threats two lanes
   out (ties: +1 lane).  No side open: stay and fire (and superzap if the own lane is the
   threatened one and a zap is allowed).
3. Hunt.  Blocked lanes: any lane threatened as in 2, a lethal pulsar's lane, a lane holding an
   enemy at the rim (depth <= 0x10).  Targets: enemies not in a blocked lane, ranked fuseball >
   flipper > tanker > spiker > pulsar; the best rank wins, then the shortest path.  A path may
   not cross a blocked lane; on a closed tube it takes the short way round unless only the
   long way is clear.  Speed grows with the path length: 1 -> 3, 2-3 -> 6, 4-5 -> 9,
   6+ -> 12; 0 (or nothing reachable) -> stay.
4. Fire whenever a shot slot is free: shots_in_flight < 8 and fewer than 8 player shot depths
   are non-zero.  No fire when none is free.
5. Superzapper (play only): zaps_used == 0 and >= 3 enemies at depth <= 0x20, or zaps_used == 1
   and >= 1 enemy at depth <= 0x10 (or trapped, rule 2); never with zaps_used >= 2, while the
   zapper runs, or before ZAP_COOLDOWN_TICKS since the last zap when ticks_since_zap is given.

Spinner sign: SPIN_SIGN * speed is the lane direction.  The bridge writes the spinner value to
$0050 each frame; in tests/data/ram_ticks.npz every tick that shows $0050 = +6 has the player
position $0051 moving -6 (lane -1), and -6 moves it +6 (lane +1).  So a positive spinner value
DECREASES the lane number: SPIN_SIGN = -1 (tests/unit/test_expert_policy.py checks this).
"""
from __future__ import annotations

import numpy as np

from tempest_common.actions import NOOP, NUM_SPINNER, SPINNER_SPEEDS, ZAP_COOLDOWN_TICKS, ZAP_USES_PER_LEVEL
from tempest_common.game_state import (ENEMY_FLIPPER, ENEMY_FUSEBALL, ENEMY_PULSAR, ENEMY_SPIKER, ENEMY_TANKER,
                                       GS_PLAY, GS_ZOOM, NUM_LANES, RIM_DEPTH, GameState)

SPIN_SIGN = -1            # lane direction of a positive spinner value (see the module docstring)
DANGER_DEPTH = 0x60       # flippers / lethal pulsars / enemy shots this close threaten +-1 lane
FUSEBALL_DEPTH = 0x30     # fuseballs this close threaten +-FUSEBALL_RADIUS lanes
FUSEBALL_RADIUS = 2
DODGE_SPEED = 9
ZAP_NEAR_DEPTH = 0x20     # first zap: >= ZAP_FIRST_COUNT enemies this close
ZAP_FIRST_COUNT = 3
MAX_SHOTS = 8

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


def expert_actions(states: GameState, ticks_since_zap: np.ndarray | None = None) -> np.ndarray:
    """Joint action index (int16[B]) per state of a batched GameState (leading dim B)."""
    gs = states.gamestate
    B = gs.shape[0]
    rows = np.arange(B)
    rows_c = rows[:, None]
    pl = states.player_lane & 15
    op = states.tube_open.astype(np.intp)
    play = gs == GS_PLAY
    zoom = gs == GS_ZOOM
    dist_pl = _DIST[op, pl]                                      # [B, 16] player -> every lane
    spin = np.full(B, _SPIN_BY_D[16])
    zap = np.zeros(B, bool)

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

    if zoom.any():
        spikes = states.spike_heights.astype(np.int64)
        free = spikes == 0
        zkey = np.where(free.any(axis=1)[:, None], (~free) << 12, (256 - spikes) << 5) + np.abs(dist_pl)
        zoom_d = dist_pl[rows, zkey.argmin(axis=1)]
        spin = np.where(zoom, _SPIN_BY_D[zoom_d + 16], spin)

    shot_free = (states.shots_in_flight < MAX_SHOTS) & ((states.player_shot_depth != 0).sum(axis=1) < MAX_SHOTS)
    action = (shot_free + 2 * zap) * NUM_SPINNER + spin
    return np.where((play | zoom) & states.player_alive, action, NOOP).astype(np.int16)


def expert_action(state: GameState) -> int:
    """Joint action index for one unbatched GameState."""
    return int(expert_actions(GameState.stack([state]))[0])
