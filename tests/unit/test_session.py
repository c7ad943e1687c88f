"""The game session's pure parts on RAM recorded from the real game: tick kinds, and the Lua
bridge's constants against the Python ones."""
import re
from pathlib import Path

import numpy as np
import pytest

from services.emulator import bridge
from services.emulator.session import DECISIONS, Tick, TickClassifier, TickKind
from tempest_common import ram_map
from tempest_common.game_state import decode_ram
from tests.unit.recorded import FIRST_LIVES, GAME_OVER, ZOOM

K = TickKind
LUA = Path(bridge.__file__).with_name("lua") / "bridge.lua"


def kinds(ticks, classifier=None):
    c = classifier or TickClassifier()
    return [c.classify(ram) for ram in ticks]


def runs(ks):
    """[(kind, first index, count)] of consecutive equal kinds."""
    out = []
    for i, k in enumerate(ks):
        if out and out[-1][0] is k:
            out[-1][2] += 1
        else:
            out.append([k, i, 1])
    return [tuple(r) for r in out]


CASES = {
    # name: (ticks, expected runs of (kind, first index, count))
    "boot, first life, death edge, second life": (FIRST_LIVES, [
        (K.MENU, 0, 33), (K.START, 33, 1), (K.PLAY, 34, 242), (K.DEATH, 276, 1), (K.MENU, 277, 101),
        (K.PLAY, 378, 42)]),
    "zoom between levels": (ZOOM, [
        (K.START, 0, 1), (K.PLAY, 1, 8), (K.ZOOM, 9, 47), (K.MENU, 56, 64), (K.PLAY, 120, 20)]),
    "game over, then a new game": (GAME_OVER, [
        (K.START, 0, 1), (K.PLAY, 1, 12), (K.GAME_OVER, 13, 1), (K.MENU, 14, 125), (K.START, 139, 1),
        (K.PLAY, 140, 10)]),
}


@pytest.mark.parametrize("name", CASES)
def test_tick_kinds_on_recorded_play(name):
    ticks, expected = CASES[name]
    assert runs(kinds(ticks)) == expected


def test_kinds_agree_with_the_full_decode():
    for ticks in (FIRST_LIVES, ZOOM, GAME_OVER):
        s = decode_ram(ticks)
        ks = kinds(ticks)
        decides = np.array([k in DECISIONS for k in ks])
        assert np.array_equal(decides, s.in_play & s.player_alive & ~s.attract)
        edges = [i for i, k in enumerate(ks) if k in (K.DEATH, K.GAME_OVER)]
        assert all(not s.player_alive[i] and s.player_alive[i - 1] for i in edges)


def test_a_load_makes_the_next_tick_a_start():
    c = TickClassifier()
    kinds(FIRST_LIVES[:100], c)          # in a game, mid-life
    c.restart()
    assert c.classify(FIRST_LIVES[33]) is K.START
    assert c.classify(FIRST_LIVES[34]) is K.PLAY


def test_dead_player_outside_a_life_is_no_edge():
    c = TickClassifier()
    assert kinds(GAME_OVER[14:30], c) == [K.MENU] * 16


def test_tick_reads_score_lives_level():
    t = Tick(K.DEATH, FIRST_LIVES[276], 0)
    assert (t.score, t.lives, t.level, t.decides) == (450, 3, 0, False)


def _lua_constants() -> dict[str, int]:
    out = {}
    for names, values in re.findall(r"^local ([A-Z_, ]+) = ([0-9xA-Fa-f, ]+)$", LUA.read_text(), re.M):
        names, values = [n.strip() for n in names.split(",")], [int(v, 0) for v in values.split(",")]
        assert len(names) == len(values), names
        out.update(zip(names, values))
    return out


def test_lua_constants_match_python():
    lua = _lua_constants()
    python = {name: getattr(bridge, name) for name in ("CMD_ACT", "CMD_SAVE", "CMD_LOAD", "CMD_EXIT", "FLAG_LOADED",
                                                         "FLAG_SAVED", "FLAG_NOT_AWAITED")}
    python.update({name: getattr(ram_map, name) for name in (
        "MODE", "TICK", "GAME_FLAGS", "CREDITS", "SPINNER", "MODE_PLAY", "MODE_ZOOM", "MODE_LEVEL_SELECT",
        "MODE_HIGH_SCORE", "GAME_RUNNING_BIT", "RAM_SIZE")})
    assert {k: lua.get(k) for k in python} == python
    # every upper-case Lua constant that names a protocol number or address is checked above
    assert set(lua) - set(python) <= {"MAX_UNANSWERED", "READ_SIZE"}
