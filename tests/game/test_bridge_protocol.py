"""Game tier: the Lua bridge's protocol on the real game, seen from BridgeServer.

MAME waits for replies only in play and zoom; outside them it sends messages "not awaited" and
reads their replies later, so a command sent then takes effect late and is confirmed by flags.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from services.emulator.bridge import (CMD_ACT, CMD_EXIT, CMD_LOAD, CMD_SAVE, FLAG_LOADED, FLAG_SAVED, BridgeServer,
                                      BridgeTimeout)
from services.emulator.mame_process import MameProcess
from services.emulator.session import TickClassifier, TickKind

pytestmark = pytest.mark.game

PLAY, ZOOM = 0x04, 0x20
HOLD_FIRE_SPIN = (True, False, 9)   # fire while spinning: the game goes on until the player dies


def command(server, cmd, timeout=30):
    """Reply a save or load; return the message whose flags confirm it (neutral replies before)."""
    flag = {CMD_SAVE: FLAG_SAVED, CMD_LOAD: FLAG_LOADED}[cmd]
    server.reply(cmd)
    for _ in range(1000):
        msg = server.receive(timeout)
        if msg.flags & flag:
            return msg
        server.reply(CMD_ACT)
    pytest.fail(f"MAME did not confirm command {cmd}")


def test_only_play_ticks_are_awaited_and_a_late_load_is_confirmed(rompath):
    server = BridgeServer()
    mame = MameProcess(rompath, server.port, reply_fifo=server.reply_fifo)
    mame.start()
    try:
        hello = server.accept(60)
        assert hello.kind == "H" and hello.awaited
        server.reply()
        seen = {True: 0, False: 0}
        msg = server.receive(30)

        # Back-pressure: with this attract-mode message unanswered, MAME sends at most 7 more
        # (8 outstanding), then waits instead of filling the socket.
        assert not msg.awaited
        time.sleep(1.0)   # ~400 game ticks at full speed
        queued = []
        while True:
            try:
                queued.append(server.receive(0.2))
            except BridgeTimeout:
                break
        assert len(queued) == 7 and all(not m.awaited for m in queued)
        assert mame.alive()
        for _ in range(8):
            server.reply(CMD_ACT)
        msg = server.receive(30)
        classifier = TickClassifier()
        for _ in range(20_000):
            in_play = int(msg.ram[0]) in (PLAY, ZOOM)
            assert msg.awaited == in_play, f"mode {msg.ram[0]:#x}: awaited={msg.awaited}"
            seen[in_play] += 1
            if classifier.classify(msg.ram) is TickKind.START:
                break
            server.reply(CMD_ACT)
            msg = server.receive(30)
        assert seen[False] > 0, "attract mode should send not-awaited messages"

        saved = command(server, CMD_SAVE)
        assert saved.saved and saved.awaited
        start_ram = saved.ram.copy()

        # Play until the first tick outside play/zoom (the player died), then load from there:
        # MAME reads that reply late, and command() waits for the message that confirms it.
        server.reply(CMD_ACT, *HOLD_FIRE_SPIN)
        for _ in range(200_000):
            msg = server.receive(30)
            assert msg.awaited == (int(msg.ram[0]) in (PLAY, ZOOM))
            if not msg.awaited:
                break
            server.reply(CMD_ACT, *HOLD_FIRE_SPIN)
        else:
            pytest.fail("the game never left play")
        loaded = command(server, CMD_LOAD)
        assert loaded.loaded and loaded.awaited
        assert int(loaded.ram[0]) == PLAY
        # The whole of RAM is back at the saved start of play.
        assert np.array_equal(loaded.ram, start_ram)
        server.reply(CMD_EXIT)
        assert mame.wait(10), "MAME did not exit when asked"
    finally:
        server.close()
        mame.stop(grace_s=1.0)
