"""GameSession: one MAME running Tempest, played tick by tick by the rules every player shares.

The worker, `evaluate.py`, `TempestEnv` and tools/record_ram.py play through it; nothing else
calls `BridgeServer.receive` or `reply`.  Every message becomes a `Tick` of one `TickKind`
(`TickClassifier`: pure, RAM only), and every tick gets exactly one answer:
  - `act(action)` on a decision tick (START, PLAY, ZOOM): the superzapper gate applies here, to
    every policy alike; returns the action played.  `gate(action)` is that gate alone, played
    nowhere (an imitation label gets the same gate as the action, before or after the answer);
  - `pass_tick()` on any other tick (outside play MAME drives the game itself);
  - `save()` / `load()`: MAME confirms by the flags of a later message, never by timing; ticks of
    the old game that arrive before a load is confirmed are answered here, never returned;
    `restart()` blocks until play starts over from the saved start of play;
  - `exit()` asks MAME to quit.
"""
from __future__ import annotations

import contextlib
import enum
import time
from typing import Callable, NamedTuple

import numpy as np

from tempest_common import ram_map as M
from tempest_common.actions import ACTIONS, gate_zap

from .bridge import CMD_ACT, CMD_EXIT, CMD_LOAD, CMD_SAVE, BridgeClosed, BridgeServer, BridgeTimeout
from .mame_process import MameProcess

POLL_S = 0.25  # receive in slices this long, so a stop request is seen quickly even if MAME stalls
LONG_AGO = 10**6  # ticks since the last zap, at the start of a game


class TickKind(enum.IntEnum):
    MENU = 0       # no decision: attract mode, level select, high scores, between levels, dying
    START = 1      # the first live play tick of a game (also every tick a load returns to)
    PLAY = 2
    ZOOM = 3       # flying down the tube to the next level: the player steers and fires
    DEATH = 4      # the death edge, lives left
    GAME_OVER = 5  # the death edge of the last life


DECISIONS = frozenset((TickKind.START, TickKind.PLAY, TickKind.ZOOM))
DEATHS = frozenset((TickKind.DEATH, TickKind.GAME_OVER))


class Tick(NamedTuple):
    kind: TickKind
    ram: np.ndarray      # uint8[1024], RAM $0000-$03FF
    video_frame: int     # MAME video frames since it started
    loaded: bool = False  # the first tick after a load of the saved start of play

    decides = property(lambda self: self.kind in DECISIONS)
    score = property(lambda self: int(M.bcd_score(self.ram)))
    lives = property(lambda self: int(self.ram[M.LIVES]))
    level = property(lambda self: int(self.ram[M.LEVEL]))


class TickClassifier:
    """RAM of consecutive ticks -> TickKind.  A death edge is the first tick with the player dead
    after a live play tick; the last life is the one that ends with at most one life shown."""

    def __init__(self):
        self.in_game = False   # a START was seen and no game over since
        self.in_life = False   # a live play tick was seen and no death edge since

    def restart(self) -> None:
        """The next tick is the saved start of play (a load)."""
        self.in_game = self.in_life = False

    def classify(self, ram) -> TickKind:
        if ram[M.PLAYER_STATE] & M.PLAYER_DEAD_BIT:
            if not self.in_life:
                return TickKind.MENU
            self.in_life = False
            if ram[M.LIVES] <= 1:
                self.in_game = False
                return TickKind.GAME_OVER
            return TickKind.DEATH
        mode = ram[M.MODE]
        if (mode != M.MODE_PLAY and mode != M.MODE_ZOOM) or not ram[M.GAME_FLAGS] & M.GAME_RUNNING_BIT:
            return TickKind.MENU
        self.in_life = True
        if not self.in_game:
            self.in_game = True
            return TickKind.START
        return TickKind.ZOOM if mode == M.MODE_ZOOM else TickKind.PLAY


class GameSession:
    def __init__(self, server: BridgeServer, mame: MameProcess, tick_timeout_s: float = 10.0,
                 stopping: Callable[[], bool] = lambda: False):
        self.server, self.mame, self.tick_timeout_s, self.stopping = server, mame, tick_timeout_s, stopping
        self.classifier = TickClassifier()
        self.tick: Tick | None = None      # the latest tick
        self.has_start_state = False       # MAME confirmed a save of the start of play
        self._owed = False                 # the latest tick still needs its answer
        self._loading = False              # a load MAME has not confirmed yet
        self._since_zap = LONG_AGO
        self._gate_inputs = (0, LONG_AGO)  # (zaps used, ticks since the last zap) as the latest tick arrived
        self.skipped = 0                   # ticks next_decision() answered neutrally

    @classmethod
    def launch(cls, rompath: str, *, mame_binary: str | None = None, workdir: str | None = None,
               extra_args: tuple[str, ...] = (), startup_timeout_s: float = 60.0, tick_timeout_s: float = 10.0,
               stopping: Callable[[], bool] = lambda: False) -> "GameSession":
        """Start MAME and wait for its bridge to connect (BridgeClosed if it does not)."""
        server = BridgeServer()
        mame = MameProcess(rompath, server.port, workdir, mame_binary, reply_fifo=server.reply_fifo,
                           extra_args=list(extra_args))
        try:
            mame.start()
            deadline = time.monotonic() + startup_timeout_s
            while True:
                try:
                    server.accept(min(1.0, max(0.01, deadline - time.monotonic())))
                    break
                except BridgeTimeout:
                    if not mame.alive():
                        raise BridgeClosed(f"MAME exited during start-up (code {mame.proc.returncode}): "
                                           f"{mame.log_tail(2)}") from None
                    if stopping() or time.monotonic() > deadline:
                        raise
            server.reply()  # the hello
        except BaseException:
            mame.stop(grace_s=0.0)
            server.close()
            raise
        return cls(server, mame, tick_timeout_s, stopping)

    # -- ticks in ------------------------------------------------------------------------------
    def next_tick(self) -> Tick:
        """The next tick, owing its answer."""
        if self._owed:
            raise RuntimeError("answer the latest tick before asking for the next one")
        while True:
            msg = self._receive()
            if self._loading and not msg.loaded:
                self.server.reply(CMD_ACT)  # sent before MAME read the load: the game being left
                continue
            if msg.loaded:
                self._loading = False
                self.classifier.restart()
                self._since_zap = LONG_AGO
            if msg.saved:
                self.has_start_state = True
            self._since_zap += 1
            # fixed on arrival, so a zap played on this tick does not change this tick's gate
            self._gate_inputs = (int(msg.ram[M.ZAPS_USED]), self._since_zap)
            self._owed = True
            self.tick = Tick(self.classifier.classify(msg.ram), msg.ram, msg.video_frame, msg.loaded)
            return self.tick

    def next_decision(self) -> Tick:
        """The next decision tick or death edge; the ticks between get neutral answers, and their
        number is `skipped` (velocities span no gap: with ticks skipped, the previous is None)."""
        tick, self.skipped = self.next_tick(), 0
        while not tick.decides and tick.kind not in DEATHS:
            self.pass_tick()
            tick, self.skipped = self.next_tick(), self.skipped + 1
        return tick

    def _receive(self):
        waited = 0.0
        while True:
            try:
                return self.server.receive(POLL_S)
            except BridgeTimeout:
                waited += POLL_S
                if self.stopping():
                    raise BridgeClosed("stopping while MAME is silent") from None
                if waited >= self.tick_timeout_s:
                    raise BridgeTimeout(f"MAME stalled: no game tick for {waited:.0f} s") from None

    # -- answers out ---------------------------------------------------------------------------
    def act(self, action: int) -> int:
        """Answer a decision tick with a joint action index; returns the action played (gated)."""
        tick = self.tick
        if not self._owed or not tick.decides:
            raise RuntimeError(f"act() answers a decision tick, not {tick and tick.kind.name}")
        action = self.gate(action)
        a = ACTIONS[action]
        self._answer(CMD_ACT, a.fire, a.zap, a.spinner)
        if a.zap:
            self._since_zap = 0
        return action

    def gate(self, action: int) -> int:
        """The action `act(action)` plays (did play) on the latest decision tick, without playing
        anything: the superzapper gate as it stood when the tick arrived, answered or not."""
        tick = self.tick
        if tick is None or not tick.decides:
            raise RuntimeError(f"gate() applies on a decision tick, not {tick and tick.kind.name}")
        return gate_zap(int(action), *self._gate_inputs)

    def pass_tick(self) -> None:
        self._answer(CMD_ACT)

    def save(self) -> None:
        """Save the start of play; `has_start_state` turns True with MAME's confirmation."""
        self._answer(CMD_SAVE)

    def load(self) -> None:
        """Back to the saved start of play: the next tick returned is its START (loaded=True)."""
        if not self.has_start_state:
            raise RuntimeError("no start of play has been saved on this MAME")
        self._loading = True
        self._answer(CMD_LOAD)

    def exit(self) -> None:
        self._answer(CMD_EXIT)

    def _answer(self, command: int, fire: bool = False, zap: bool = False, spinner: int = 0) -> None:
        if not self._owed:
            raise RuntimeError("no tick to answer")
        self._owed = False
        self.server.reply(command, fire, zap, spinner)

    # -- blocking helpers ----------------------------------------------------------------------
    def restart(self, max_ticks: int = 100_000) -> Tick:
        """Answer what is owed so that play starts over from the saved start of play, saving it
        first (at this MAME's first START) if there is none; returns that START tick, owed."""
        if not self._owed:
            self.next_tick()
        for _ in range(max_ticks):
            if self.has_start_state:
                self.load()
                return self.next_tick()
            if self.tick.kind is TickKind.START:
                self.save()
            else:
                self.pass_tick()
            self.next_tick()
        raise BridgeTimeout(f"no start of play saved within {max_ticks} ticks")

    def close(self, grace_s: float = 3.0) -> None:
        """Ask MAME to exit if it waits on an answer, then stop it (killed after grace_s)."""
        if self._owed:
            with contextlib.suppress(BridgeClosed):   # MAME may be gone already
                self.exit()
        self.server.close()
        self.mame.stop(grace_s=grace_s)
