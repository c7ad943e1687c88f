"""GameSession: one MAME running Tempest, played tick by tick by the rules every player shares.

The worker, `evaluate.py`, `TempestEnv` and tools/record_ram.py play through it; nothing else
calls `BridgeServer.receive` or `reply`.  Every message becomes a `Tick` of one `TickKind`
(`TickClassifier`: pure, RAM only), and every tick gets exactly one answer:
  - `act(action)` on a decision tick (START, PLAY, ZOOM): the superzapper gate applies here, to
    every policy alike; returns the action played.  `gate(action)` is that gate alone, played
    nowhere (an imitation label gets the same gate as the action, before or after the answer);
  - `pass_tick()` on any other tick (outside play MAME drives the game itself);
  - `save(slot)` / `load(slot)`: named save slots ("start", the start of play, unless another is
    named); MAME confirms by the flags of a later message, never by timing; ticks of the old game
    that arrive before a load is confirmed are answered here, never returned; `restart(slot)`
    blocks until play starts over from a slot; `install_state(slot, data)` adds a state saved by
    another MAME (a start bank), `state_bytes(slot)` reads one this MAME saved;
  - `exit()` asks MAME to quit.
"""
from __future__ import annotations

import contextlib
import enum
import re
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from tempest_common import ram_map as M
from tempest_common.actions import ACTIONS, gate_zap

from .bridge import CMD_ACT, CMD_EXIT, CMD_LOAD, CMD_SAVE, BridgeClosed, BridgeServer, BridgeTimeout
from .mame_process import ROM_SET, MameProcess

POLL_S = 0.25  # receive in slices this long, so a stop request is seen quickly even if MAME stalls
LONG_AGO = 10**6  # ticks since the last zap, at the start of a game
START = "start"   # the slot holding the start of play
MAX_SLOTS = 255   # slot numbers travel in one reply byte (0 is START)
SLOT_NAME = re.compile(r"[A-Za-z0-9_.+-]{1,64}")


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
        self.slots: dict[str, int] = {START: 0}   # slot name -> number on the bridge
        self.saved: set[str] = set()       # slots holding a state (saved and confirmed, or installed)
        self._saving: str | None = None    # the slot of a save MAME has not confirmed yet
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
            if msg.saved and self._saving is not None:
                self.saved.add(self._saving)
                self._saving = None
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

    @property
    def has_start_state(self) -> bool:
        """MAME confirmed a save of the start of play."""
        return START in self.saved

    def _slot(self, name: str) -> int:
        """The bridge number of a slot name (a new name gets the next free number)."""
        if name not in self.slots:
            if not SLOT_NAME.fullmatch(name):
                raise ValueError(f"save slot name {name!r}: use 1-64 letters, digits, '_', '.', '+' or '-'")
            if len(self.slots) > MAX_SLOTS:
                raise ValueError(f"at most {MAX_SLOTS} named save slots besides {START!r}")
            self.slots[name] = len(self.slots)
        return self.slots[name]

    def state_path(self, slot: str) -> Path:
        """Where MAME keeps the state of a slot (its -state_directory, per ROM set)."""
        number = self._slot(slot)
        return Path(self.mame.workdir) / "sta" / ROM_SET / (f"{START}.sta" if number == 0 else f"{START}-{number}.sta")

    def save(self, slot: str = START) -> None:
        """Save the game as it is on this tick into `slot`; it joins `saved` with MAME's confirmation."""
        number = self._slot(slot)
        self._saving = slot
        self._answer(CMD_SAVE, slot=number)

    def load(self, slot: str = START) -> None:
        """Back to a saved slot: the next tick returned is its START (loaded=True)."""
        if slot not in self.saved:
            raise RuntimeError(f"no state in save slot {slot!r} on this MAME" if slot != START
                               else "no start of play has been saved on this MAME")
        self._loading = True
        self._answer(CMD_LOAD, slot=self.slots[slot])

    def install_state(self, slot: str, data: bytes) -> None:
        """Make a state saved by another MAME (same ROM, same MAME) loadable from `slot`."""
        path = self.state_path(slot)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.saved.add(slot)

    def state_bytes(self, slot: str) -> bytes:
        """The state file of a confirmed save."""
        if slot not in self.saved:
            raise RuntimeError(f"no state in save slot {slot!r} on this MAME")
        return self.state_path(slot).read_bytes()

    def exit(self) -> None:
        self._answer(CMD_EXIT)

    def _answer(self, command: int, fire: bool = False, zap: bool = False, spinner: int = 0, slot: int = 0) -> None:
        if not self._owed:
            raise RuntimeError("no tick to answer")
        self._owed = False
        self.server.reply(command, fire, zap, spinner, slot)

    # -- blocking helpers ----------------------------------------------------------------------
    def restart(self, slot: str = START, max_ticks: int = 100_000) -> Tick:
        """Answer what is owed so that play starts over from `slot`, returning its START tick,
        owed.  The start of play is saved first (at this MAME's first START) if there is none;
        any other slot must hold a state already."""
        if slot != START and slot not in self.saved:
            raise RuntimeError(f"no state in save slot {slot!r} on this MAME")
        if not self._owed:
            self.next_tick()
        for _ in range(max_ticks):
            if slot in self.saved and self._saving is None:
                self.load(slot)
                return self.next_tick()
            if self.tick.kind is TickKind.START and self._saving is None:
                self.save(START)
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
