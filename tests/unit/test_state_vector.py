"""State vector: documented layout, ranges, and the predecessor's encoding bugs avoided."""
import numpy as np

from tempest_common.game_state import decode_ram
from tempest_common.state_vector import FEATURES, INDEX, LOWER, STATE_SIZE, UPPER, encode_state
from tests.unit.recorded import FIRST_LIVES, GAME_OVER, ZOOM


def _play_state(player_lane=0, tube_open=False):
    ram = FIRST_LIVES[150].copy()
    ram[0x200] = player_lane
    ram[0x111] = 0xFF if tube_open else 0x00
    ram[0x2DF:0x2E6] = 0  # all enemy slots empty
    return ram


def test_every_index_documented_and_within_range_on_recorded_play():
    assert len(FEATURES) == STATE_SIZE == len(INDEX)
    for ticks in (FIRST_LIVES, ZOOM, GAME_OVER):
        s = decode_ram(ticks)
        v = encode_state(s[1:], s[:-1])
        assert v.shape == (len(ticks) - 1, STATE_SIZE) and v.dtype == np.float32
        assert np.all(np.isfinite(v)) and np.all(v >= LOWER) and np.all(v <= UPPER)


def test_single_equals_batch():
    s = decode_ram(FIRST_LIVES[140:160])
    batch = encode_state(s[1:], s[:-1])
    for i in range(19):
        assert np.array_equal(batch[i], encode_state(s[i + 1], s[i]))


def test_enemy_in_lane_zero_is_real_and_absent_slots_are_distinct():
    ram = _play_state(player_lane=0)
    absent = encode_state(decode_ram(ram))
    ram[0x2DF], ram[0x2B9], ram[0x283] = 0x80, 0, 0  # a flipper in lane 0 (the player's lane)
    present = encode_state(decode_ram(ram))
    assert absent[INDEX["enemy0_present"]] == 0 and present[INDEX["enemy0_present"]] == 1
    assert present[INDEX["enemy0_rel_lane"]] == 0  # in my lane ...
    assert present[INDEX["enemy0_proximity"]] > 0  # ... and still visibly there
    assert present[INDEX["enemy0_flipper"]] == 1
    assert present[INDEX["threat_own"]] > 0 and absent[INDEX["threat_own"]] == 0


def test_relative_lane_wraps_on_closed_tubes_only():
    for tube_open, expected in ((False, 1 / 8), (True, -15 / 15)):
        ram = _play_state(player_lane=15, tube_open=tube_open)
        ram[0x2DF], ram[0x2B9] = 0x80, 0  # enemy in lane 0
        v = encode_state(decode_ram(ram))
        assert np.isclose(v[INDEX["enemy0_rel_lane"]], expected)


def test_threat_lanes_do_not_exist_past_the_edge_of_an_open_tube():
    ram = _play_state(player_lane=0, tube_open=True)
    ram[0x2DF], ram[0x2B9] = 0x40, 15  # enemy in lane 15: not adjacent on an open tube
    v = encode_state(decode_ram(ram))
    assert v[INDEX["threat_left"]] == 0
    ram[0x111] = 0
    v = encode_state(decode_ram(ram))
    assert v[INDEX["threat_left"]] > 0


def test_velocity_needs_the_same_slot_occupied_twice():
    s0, s1 = decode_ram(FIRST_LIVES[150]), decode_ram(FIRST_LIVES[151])
    without = encode_state(s1)
    assert all(without[INDEX[f"enemy{k}_depth_velocity"]] == 0 for k in range(7))
    with_prev = encode_state(s1, s0)
    moved = [with_prev[INDEX[f"enemy{k}_depth_velocity"]] for k in range(7)]
    assert any(m != 0 for m in moved)


def test_lane_map_places_each_object_at_its_distance_from_the_player():
    ram = _play_state(player_lane=3)
    ram[0x2DF], ram[0x2B9], ram[0x283] = 0x40, 5, 0   # a flipper in lane 5 at depth 0x40: two lanes up
    ram[0x2E0], ram[0x2BA], ram[0x283 + 1] = 0x10, 14, 4   # a fuseball at the rim in lane 14: 5 lanes down (wraps)
    ram[0x3AC:0x3BC] = 0
    ram[0x3AC + 3] = 0xC0                               # a spike in the player's own lane, tip at 0xC0
    v = encode_state(decode_ram(ram))
    lane = lambda d, col: v[INDEX[f"lane{d:+d}_{col}"]]  # noqa: E731
    assert lane(2, "enemy") == lane(2, "flipper") == 0.75 and lane(2, "fuseball") == 0 and lane(2, "at_rim") == 0
    assert lane(-5, "enemy") == lane(-5, "fuseball") == 1 - 0x10 / 256 and lane(-5, "at_rim") == 1
    assert lane(0, "spike") == 1 - 0xC0 / 256 and lane(1, "spike") == 0
    others = [d for d in range(-8, 8) if d not in (2, -5)]
    assert all(lane(d, "enemy") == 0 for d in others)
    assert all(lane(d, "exists") == 1 for d in range(-8, 8))   # a closed tube: every lane


def test_lane_map_ends_with_an_open_tube():
    ram = _play_state(player_lane=0, tube_open=True)
    ram[0x2DF], ram[0x2B9] = 0x40, 15   # lane 15: 15 lanes up on an open tube, past the map's +7
    v = encode_state(decode_ram(ram))
    assert v[INDEX["lane-1_exists"]] == 0 and v[INDEX["lane+0_exists"]] == v[INDEX["lane+7_exists"]] == 1
    assert all(v[INDEX[f"lane{d:+d}_enemy"]] == 0 for d in range(-8, 8))
