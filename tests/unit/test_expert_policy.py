"""The rule-based expert (services/expert/policy.py): a table of named situations built on a
recorded play tick, batch == per-state, valid outputs, and the spinner sign from the recording.

Base: FIRST_LIVES[150], a play tick with the player in lane 12 on a closed tube, with its enemies
and all shots cleared.  Directions are checked in lane terms: SPIN_SIGN * spinner speed.
"""
import numpy as np
import pytest

from services.expert.policy import SPIN_SIGN, expert_action, expert_actions
from tempest_common.actions import NOOP, NUM_ACTIONS, ZAP_COOLDOWN_TICKS, decode_action
from tempest_common.game_state import decode_ram
from tests.unit.recorded import FIRST_LIVES, GAME_OVER, ZOOM

FLIPPER, PULSAR, TANKER, SPIKER, FUSEBALL = 0, 1, 2, 3, 4


def base_ram(player_lane=12, open_tube=False):
    ram = FIRST_LIVES[150].copy()
    ram[0x283:0x28A] = 0      # enemy types / flags
    ram[0x28A:0x291] = 0
    ram[0x2DF:0x2E6] = 0      # enemy depths: all slots empty
    ram[0x2D3:0x2DB] = 0      # player shots
    ram[0x135] = 0
    ram[0x2DB:0x2DF] = 0      # enemy shots (depth high, low)
    ram[0x2E6:0x2EA] = 0
    ram[0x148] = 0xF3         # pulsing: not lethal
    ram[0x3AA] = 0            # no zap used
    ram[0x200] = player_lane
    ram[0x111] = 0xFF if open_tube else 0x00
    return ram


def enemy(ram, slot, kind, lane, depth, flipping=False, increasing=False):
    ram[0x283 + slot] = kind | (0x80 if flipping else 0) | (0x40 if increasing else 0)
    ram[0x2B9 + slot] = lane
    ram[0x2DF + slot] = depth
    return ram


def enemy_shot(ram, i, lane, depth_hi):
    ram[0x2B5 + i] = lane
    ram[0x2DB + i] = depth_hi
    ram[0x2E6 + i] = 0x40
    return ram


def lane_dir(action):
    return int(np.sign(SPIN_SIGN * decode_action(action).spinner))


def _flipper_right():
    return enemy(base_ram(), 0, FLIPPER, 13, 0x40)


def _flipper_left():
    return enemy(base_ram(), 0, FLIPPER, 11, 0x40)


def _flipper_deep_adjacent():
    return enemy(base_ram(), 0, FLIPPER, 13, 0xA0)


def _flipper_both_sides():
    return enemy(enemy(base_ram(), 0, FLIPPER, 11, 0x40), 1, FLIPPER, 13, 0x40)


def _flipping_toward_player():
    # a flipper two lanes away flipping toward the player's neighbour lane 13 -> not 13 next
    return enemy(base_ram(), 0, FLIPPER, 14, 0x40, flipping=True, increasing=False)


def _pulsar_own_lane(pulsing):
    ram = enemy(base_ram(), 0, PULSAR, 12, 0x90)
    ram[0x148] = pulsing
    return ram


def _fuseball_two_right():
    return enemy(base_ram(), 0, FUSEBALL, 14, 0x20)


def _lane0_from_15(open_tube):
    return enemy(base_ram(player_lane=15, open_tube=open_tube), 0, TANKER, 0, 0xA0)


def _open_tube_wall():
    # on an open tube in lane 0 with a flipper closing in the own lane: only +1 is possible
    return enemy(base_ram(player_lane=0, open_tube=True), 0, FLIPPER, 0, 0x40)


def _enemy_shot(depth_hi, lane=12):
    return enemy_shot(base_ram(), 0, lane, depth_hi)


def _hunt_priority():
    # a fuseball deep in lane 8 (4 lanes down) beats a flipper deep in lane 14 (2 lanes up)
    return enemy(enemy(base_ram(), 0, FLIPPER, 14, 0xA0), 1, FUSEBALL, 8, 0x90)


def _hunt_tanker(lane):
    return enemy(base_ram(), 0, TANKER, lane, 0xA0)


def _hunt_blocked_short_way():
    # tanker in lane 14; a lethal pulsar deep in lane 13 blocks the short way -> the long way round
    ram = enemy(enemy(base_ram(), 0, TANKER, 14, 0xA0), 1, PULSAR, 13, 0x90)
    ram[0x148] = 0x40
    return ram


def _hunt_skips_rim_lane():
    # the nearest flipper is at the rim (its lane is forbidden); hunt the one in lane 8 instead
    return enemy(enemy(base_ram(), 0, FLIPPER, 4, 0x10), 1, FLIPPER, 8, 0xA0)


def _zoom(spikes, player_lane=12):
    ram = base_ram(player_lane=player_lane)
    ram[0x00] = 0x20
    ram[0x3AC:0x3BC] = spikes
    return ram


def _zoom_free_lanes():
    spikes = np.full(16, 0x80, np.uint8)
    spikes[[9, 14]] = 0          # lane 14 is 2 up, lane 9 is 3 down
    return _zoom(spikes)


def _zoom_all_spiked():
    spikes = np.full(16, 0x80, np.uint8)
    spikes[10] = 0xE0            # the shortest spike (largest tip depth), 2 down
    spikes[15] = 0xC0
    return _zoom(spikes)


def _zoom_own_lane_free():
    spikes = np.full(16, 0x80, np.uint8)
    spikes[12] = 0
    return _zoom(spikes)


def _no_shot_slot():
    ram = enemy(base_ram(), 0, TANKER, 12, 0xA0)
    ram[0x2D3:0x2DB] = np.arange(0x20, 0xA0, 0x10)
    ram[0x135] = 8
    return ram


def _rim_crowd(zaps_used):
    ram = enemy(enemy(enemy(base_ram(), 0, FLIPPER, 3, 0x10), 1, FLIPPER, 5, 0x18), 2, TANKER, 7, 0x20)
    ram[0x3AA] = zaps_used
    return ram


def _one_at_rim(zaps_used):
    ram = enemy(base_ram(), 0, FLIPPER, 5, 0x10)
    ram[0x3AA] = zaps_used
    return ram


def shots_flying(ram, n):
    """n player shots in flight (depths 0x30, 0x40, ...); the other slots free."""
    ram[0x2D3:0x2DB] = 0
    ram[0x2D3:0x2D3 + n] = np.arange(0x30, 0x30 + 0x10 * n, 0x10)
    ram[0x135] = n
    return ram


def _rim_flipper_flipping_down_into_lane(shots):
    # lane byte 13 = the higher lane of the pair, lane-increasing clear: it flips from 13 into 12
    return shots_flying(enemy(base_ram(), 0, FLIPPER, 13, 0x10, flipping=True, increasing=False), shots)


def _rim_flipper_flipping_up_into_lane(shots):
    # lane byte 12, lane-increasing set: it flips from 11 into 12
    return shots_flying(enemy(base_ram(), 0, FLIPPER, 12, 0x10, flipping=True, increasing=True), shots)


def _rim_flipper_flipping_up_out_of_lane(shots):
    # lane byte 13, lane-increasing set: it flips from 12 into 13, away from the player's lane
    return shots_flying(enemy(base_ram(), 0, FLIPPER, 13, 0x10, flipping=True, increasing=True), shots)


def _deep_tanker_own_lane(shots):
    return shots_flying(enemy(base_ram(), 0, TANKER, 12, 0xA0), shots)


def _deep_tanker_other_lane(shots):
    return shots_flying(enemy(base_ram(), 0, TANKER, 14, 0xA0), shots)


def _close_shot_own_lane(shots):
    return shots_flying(enemy_shot(base_ram(), 0, 12, 0x28), shots)


def _zoom_with_shots(shots):
    ram = _zoom_own_lane_free()
    return shots_flying(ram, shots)


def _mode(value):
    ram = enemy(base_ram(), 0, TANKER, 14, 0xA0)
    ram[0x00] = value
    return ram


# name: (ram, expected lane direction or None, expected fire or None, expected zap or None, exact or None)
CASES = {
    "flipper closing in the right neighbour lane: step left": (_flipper_right(), -1, True, False, None),
    "flipper closing in the left neighbour lane: step right": (_flipper_left(), +1, True, None, None),
    "deep flipper next door is no threat: go for it": (_flipper_deep_adjacent(), +1, True, False, None),
    "flippers closing on both sides: stay and fire": (_flipper_both_sides(), 0, True, None, None),
    "flipping flipper two lanes up: do not step toward it": (_flipping_toward_player(), -1, True, None, None),
    "pulsing pulsar in the own lane: move away": (_pulsar_own_lane(0x40), None, True, None, None),
    "quiet pulsar in the own lane: stay and shoot it": (_pulsar_own_lane(0xC0), 0, True, False, None),
    "fuseball near the rim two lanes up: move away": (_fuseball_two_right(), -1, True, None, None),
    "enemy in lane 0 from lane 15, closed tube: one lane up": (_lane0_from_15(False), +1, True, None, None),
    "enemy in lane 0 from lane 15, open tube: fifteen lanes down": (_lane0_from_15(True), -1, True, None, None),
    "open tube wall in lane 0, flipper in own lane: step up": (_open_tube_wall(), +1, True, None, None),
    "close enemy shot in the own lane: move": (_enemy_shot(0x40), None, True, None, None),
    "close enemy shot in the left lane: step right": (_enemy_shot(0x40, lane=11), +1, True, None, None),
    "far enemy shot in the own lane: ignore": (_enemy_shot(0xA0), 0, True, None, None),
    "hunt: fuseball before flipper": (_hunt_priority(), -1, True, None, None),
    "hunt: tanker two lanes up": (_hunt_tanker(14), +1, True, None, None),
    "hunt: tanker in the own lane: stay and fire": (_hunt_tanker(12), 0, True, None, None),
    "hunt: blocked short way, take the long way round": (_hunt_blocked_short_way(), -1, True, None, None),
    "hunt: skip a lane with an enemy at the rim": (_hunt_skips_rim_lane(), -1, True, None, None),
    "zoom: nearest spike-free lane": (_zoom_free_lanes(), +1, True, False, None),
    "zoom: all lanes spiked, go to the shortest spike": (_zoom_all_spiked(), -1, True, False, None),
    "zoom: own lane spike-free, stay": (_zoom_own_lane_free(), 0, True, False, None),
    "no shot slot free: no fire": (_no_shot_slot(), 0, False, False, None),
    "3 enemies near the rim, no zap used: zap": (_rim_crowd(0), None, None, True, None),
    "3 enemies near the rim, both zaps used: no zap": (_rim_crowd(2), None, None, False, None),
    "1 enemy at the rim, one zap used: zap": (_one_at_rim(1), None, None, True, None),
    "1 enemy at the rim, no zap used: no zap": (_one_at_rim(0), None, None, False, None),
    "rim flipper flipping down into the own lane, 7 shots flying: fire": (
        _rim_flipper_flipping_down_into_lane(7), None, True, None, None),
    "rim flipper flipping up into the own lane, 7 shots flying: fire": (
        _rim_flipper_flipping_up_into_lane(7), None, True, None, None),
    "rim flipper flipping up out of the own lane, 7 shots flying: hold fire": (
        _rim_flipper_flipping_up_out_of_lane(7), None, False, None, None),
    "close enemy shot in the own lane, 7 shots flying: fire": (_close_shot_own_lane(7), None, True, None, None),
    "deep enemy in the own lane, 5 shots flying: fire": (_deep_tanker_own_lane(5), 0, True, None, None),
    "deep enemy in the own lane, 6 shots flying: hold fire (keep a reserve)": (
        _deep_tanker_own_lane(6), 0, False, None, None),
    "own lane empty, 3 shots flying: fire": (_deep_tanker_other_lane(3), +1, True, None, None),
    "own lane empty, 4 shots flying: hold fire (keep a reserve)": (_deep_tanker_other_lane(4), +1, False, None, None),
    "zoom, 7 shots flying: fire": (_zoom_with_shots(7), 0, True, False, None),
    "level select: NOOP": (_mode(0x16), None, None, None, NOOP),
    "high-score entry: NOOP": (_mode(0x12), None, None, None, NOOP),
}


@pytest.mark.parametrize("name", list(CASES))
def test_situation(name):
    ram, direction, fire, zap, exact = CASES[name]
    action = expert_action(decode_ram(ram))
    got = decode_action(action)
    if exact is not None:
        assert action == exact, (name, got)
    if direction is not None:
        assert lane_dir(action) == direction, (name, got)
    if fire is not None:
        assert got.fire == fire, (name, got)
    if zap is not None:
        assert got.zap == zap, (name, got)


def test_moves_away_cases_do_move():
    for name in ("pulsing pulsar in the own lane: move away", "close enemy shot in the own lane: move"):
        assert lane_dir(expert_action(decode_ram(CASES[name][0]))) != 0, name


def test_speed_grows_with_distance():
    speeds = [abs(decode_action(expert_action(decode_ram(_hunt_tanker(12 - k)))).spinner) for k in range(0, 8)]
    assert speeds[0] == 0 and speeds[1] > 0 and speeds == sorted(speeds) and speeds[-1] >= 9


def test_dodge_keeps_lane0_wall_on_open_tube():
    # flipper closing in lane 1, player at the wall in lane 0: no step to -1, stay
    ram = enemy(base_ram(player_lane=0, open_tube=True), 0, FLIPPER, 1, 0x40)
    assert lane_dir(expert_action(decode_ram(ram))) == 0


def test_zap_respects_cooldown():
    states = decode_ram(np.stack([_rim_crowd(0)] * 3))
    ticks = np.array([0, ZAP_COOLDOWN_TICKS - 1, ZAP_COOLDOWN_TICKS])
    got = [decode_action(a).zap for a in expert_actions(states, ticks_since_zap=ticks)]
    assert got == [False, False, True]


def test_batch_matches_single_states():
    ram = np.concatenate([FIRST_LIVES, ZOOM, GAME_OVER, np.stack([c[0] for c in CASES.values()])])
    states = decode_ram(ram)
    batch = expert_actions(states)
    assert batch.dtype == np.int16 and batch.shape == (len(ram),)
    single = np.array([expert_action(states[i]) for i in range(len(ram))])
    np.testing.assert_array_equal(batch, single)
    # a random mix of sub-batches agrees too (play and zoom rows side by side)
    rng = np.random.default_rng(0)
    idx = rng.choice(len(ram), 32)
    np.testing.assert_array_equal(expert_actions(decode_ram(ram[idx])), batch[idx])


def test_outputs_are_valid_indices_on_recorded_and_random_ram():
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (512, 1024), dtype=np.uint8)
    noise[::2, 0] = 0x04
    noise[1::4, 0] = 0x20
    noise[:, 0x201] &= 0x7F
    for ram in (np.concatenate([FIRST_LIVES, ZOOM, GAME_OVER]), noise):
        actions = expert_actions(decode_ram(ram))
        assert actions.dtype == np.int16
        assert np.all((actions >= 0) & (actions < NUM_ACTIONS))
    assert np.any(actions != NOOP)


def test_spin_sign_matches_recording():
    """The bridge writes the spinner value to $0050; in the recording a tick showing +6 there has
    the player position $0051 (lane = $0051 >> 4) moving down, and -6 moving up."""
    moved = {6: [], -6: []}
    for rec in (FIRST_LIVES, ZOOM, GAME_OVER):
        r = rec.astype(np.int64)
        spin = np.where(r[:, 0x50] > 127, r[:, 0x50] - 256, r[:, 0x50])
        delta = (np.diff(r[:, 0x51]) + 128) % 256 - 128
        playing = np.isin(r[1:, 0], (0x04, 0x20)) & np.isin(r[:-1, 0], (0x04, 0x20))
        for v in moved:
            moved[v] += list(delta[playing & (spin[1:] == v)])
    for v, deltas in moved.items():
        nonzero = np.sign([x for x in deltas if x != 0])
        assert len(nonzero) >= 10 and np.all(nonzero == -np.sign(v)), (v, deltas)
    assert SPIN_SIGN == -1
