"""Game tier: named save slots in the game session (real MAME, real ROM): save A, save B, load A
returns A's RAM; a state saved by one MAME loads in another (how a start bank travels)."""
from __future__ import annotations

import numpy as np
import pytest

from services.emulator.session import GameSession, TickKind
from tempest_common.actions import encode_action

pytestmark = pytest.mark.game

SPIN_FIRE = encode_action(True, False, 8)   # fire while spinning: the game moves on


def play(session, ticks):
    """Play `ticks` decision ticks (from an owed decision tick); returns the owed tick after them."""
    tick = session.tick
    for _ in range(ticks):
        assert tick.decides, f"the player died within {ticks} ticks"
        session.act(SPIN_FIRE)
        tick = session.next_decision()
    return tick


def save_and_confirm(session, slot):
    session.save(slot)
    for _ in range(100):
        session.next_tick()
        if slot in session.saved:
            return
        session.pass_tick() if not session.tick.decides else session.act(SPIN_FIRE)
    pytest.fail(f"MAME did not confirm the save of {slot}")


def test_save_a_save_b_load_a_returns_a(rompath, tmp_path):
    session = GameSession.launch(rompath, workdir=str(tmp_path / "one"))
    try:
        start = session.restart()
        assert start.kind is TickKind.START and session.has_start_state
        tick_a = play(session, 40)
        ram_a = tick_a.ram.copy()
        save_and_confirm(session, "A")
        play(session, 60)
        ram_b, score_b = session.tick.ram.copy(), session.tick.score
        save_and_confirm(session, "B")
        assert not np.array_equal(ram_a, ram_b)

        loaded_a = session.restart("A")
        assert loaded_a.loaded and loaded_a.kind is TickKind.START
        assert loaded_a.score == tick_a.score and loaded_a.level == tick_a.level
        # A's RAM (up to the frame between the save and the first message after a load), not B's
        assert np.count_nonzero(loaded_a.ram != ram_a) < np.count_nonzero(loaded_a.ram != ram_b)
        after_a = [play(session, 1).ram.copy() for _ in range(20)]

        loaded_b = session.restart("B")
        assert loaded_b.score == score_b and np.count_nonzero(loaded_b.ram != ram_b) < \
            np.count_nonzero(loaded_b.ram != ram_a)
        again_a = session.restart("A")
        assert np.array_equal(again_a.ram, loaded_a.ram), "a slot loads the same state every time"
        assert all(np.array_equal(x, play(session, 1).ram) for x in after_a), "and plays on identically"
        assert session.restart().kind is TickKind.START and session.tick.score == start.score
        data = session.state_bytes("A")
        with pytest.raises(RuntimeError, match="no state in save slot 'C'"):
            session.load("C")
    finally:
        session.close(grace_s=10.0)

    other = GameSession.launch(rompath, workdir=str(tmp_path / "two"))
    try:
        other.install_state("level-x", data)
        moved = other.restart("level-x")
        assert np.array_equal(moved.ram, loaded_a.ram), "a state carried to another MAME loads the same RAM"
        assert all(np.array_equal(x, play(other, 1).ram) for x in after_a)
    finally:
        other.close(grace_s=10.0)
