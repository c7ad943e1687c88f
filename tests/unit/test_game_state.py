"""GameState decoding on RAM recorded from the real game, and lane geometry."""
import numpy as np
import pytest

from tempest_common.game_state import FIELD_SPECS, MODE_PLAY, MODE_ZOOM, GameState, decode_ram, lane_distance
from tempest_common.ram_map import bcd_score
from tests.unit.recorded import FIRST_LIVES, GAME_OVER, ZOOM


def test_bcd_score_low_byte_first():
    ram = np.zeros(1024, np.uint8)
    ram[0x40], ram[0x41], ram[0x42] = 0x50, 0x34, 0x12
    assert bcd_score(ram) == 123450
    assert list(bcd_score(np.stack([ram, np.zeros(1024, np.uint8)]))) == [123450, 0]


def test_recorded_first_life():
    s = decode_ram(FIRST_LIVES)
    assert s.mode[33] == MODE_PLAY and not np.any(s.mode[:33] == MODE_PLAY)
    assert s.player_alive[275] and not s.player_alive[276], "death edge at tick 276"
    assert s.score[276] == 450 and s.lives[276] == 3
    assert not s.attract[33]
    assert s.tube_open[150] == False  # noqa: E712  level 1 is a closed circle
    assert s.player_lane[150] == 12
    # slot 3 holds a flipper in lane 8 at depth 154, slots 0-2 are empty
    assert list(s.enemy_depth[150][:4]) == [0, 0, 0, 154] and s.enemy_lane[150][3] == 8
    assert list(s.enemy_depth[150] != 0) == [False, False, False, True, True, True, True]


def test_recorded_zoom_and_game_over():
    z = decode_ram(ZOOM)
    assert z.mode[9] == MODE_ZOOM and bool(z.in_play[9])
    between = np.isin(z.mode, (0x0E, 0x18))
    assert between.any() and not np.any(z.in_play[between]), "between-level states are not play"
    g = decode_ram(GAME_OVER)
    assert g.lives[13] == 1 and not g.player_alive[13]
    assert g.score[-1] == 0 and g.lives[-1] == 3, "a new game starts with score 0 and 3 lives"


def test_batch_decode_matches_single_and_slices():
    batch = decode_ram(FIRST_LIVES[100:110])
    for i in range(10):
        single = decode_ram(FIRST_LIVES[100 + i])
        for name, (dtype, shape) in FIELD_SPECS.items():
            assert getattr(single, name).shape == shape and str(getattr(single, name).dtype) == dtype
            assert np.array_equal(getattr(single, name), getattr(batch, name)[i])
    part = batch[2:5]
    assert len(part) == 3 and all(np.array_equal(getattr(part, n), getattr(batch, n)[2:5]) for n in FIELD_SPECS)


def test_decode_rejects_wrong_size():
    with pytest.raises(ValueError, match="1024"):
        decode_ram(np.zeros(100, np.uint8))


@pytest.mark.parametrize("frm,to,tube_open,expected", [
    (15, 0, False, 1),     # closed tube: lane 0 is next to lane 15
    (15, 0, True, -15),    # open tube: no wrap-around
    (0, 15, False, -1),
    (3, 11, False, -8),    # opposite side: the wrap picks -8
    (4, 6, False, 2),
    (0, 0, True, 0),
])
def test_lane_distance(frm, to, tube_open, expected):
    assert lane_distance(frm, to, tube_open) == expected
