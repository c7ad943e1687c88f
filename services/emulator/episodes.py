"""Game ticks -> one-step transition records and episode summaries (pure: no I/O; the clock is injected).

An episode is one life.  It opens on the first decision tick (START, PLAY or ZOOM: see
session.TickKind), and it ends:
  - terminal: at the death edge (DEATH or GAME_OVER); the record of the action before the edge
    carries the death penalty and terminal=True;
  - truncated: when MAME restarts, the worker stops, or a reset cuts it; the last decision tick
    becomes a record with truncated=True and no action (action -1): it only bootstraps.
Each decision is (actor, action, expert_action): the expert's label travels with its row; a
truncated row has none (-1, like its action: it only bootstraps).  A decision of (actor, action)
derives the label as TransitionBatch does: the action on expert rows, -1 elsewhere.
Only decision ticks become records; ticks in between (dying, level select, attract, high-score
entry, the short modes between levels) are skipped, and score that changes during skipped ticks
of a live episode is credited to the pending action.  A START tick begins a new game.
Record t is emitted once tick t+1 shows its outcome (reward = score delta, scaled and clipped,
minus the death penalty on the death edge).  Shaping reward is kept apart: the survival bonus
per tick, 0 by default.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from tempest_common.messages import ACTOR_NAMES, NO_ACTION, EpisodeSummary, expert_labels

from .session import DEATHS, Tick, TickKind


@dataclass(frozen=True)
class RewardConfig:
    scale: float = 0.01          # game reward per point
    clip: float = 10.0           # |scaled score delta| per step is clipped to this
    death_penalty: float = 5.0   # subtracted on the death edge (in reward units)
    survival_bonus: float = 0.0  # shaping reward per tick alive, stored apart


def game_reward(score_delta: int, died: bool, cfg: RewardConfig) -> float:
    r = min(max(score_delta * cfg.scale, -cfg.clip), cfg.clip)
    return r - cfg.death_penalty if died else r


@dataclass
class Record:
    """One-step transition record, as the replay stores it (the state vector is encoded later,
    per batch, from the tick's RAM and the previous decision tick's RAM)."""
    episode_id: int
    step: int
    actor: int
    action: int                 # -1 for a truncated episode's bootstrap-only last record
    reward_game: float
    reward_shaping: float
    terminal: bool
    truncated: bool
    ram: np.ndarray             # uint8[1024] of the tick the action was chosen on
    prev_ram: np.ndarray | None  # the decision tick before it (None: zero velocities)
    expert_action: int = NO_ACTION  # the expert's (gated) choice on this state; -1: none


class EpisodeTracker:
    """Feed every tick with `observe`; collect records and episode ends from its outputs."""

    def __init__(self, reward: RewardConfig = RewardConfig(), stream_id: str = "", worker_id: str = "",
                 clock: Callable[[], float] = lambda: 0.0):
        """Episode summaries name the stream and worker and carry `clock()` (the caller's: unix
        seconds in a worker) as their wall time."""
        self.reward, self.stream_id, self.worker_id, self.clock = reward, stream_id, worker_id, clock
        self.next_episode_id, self.game_id = 0, -1   # the first START makes game_id 0
        self.episode_id: int | None = None            # the open episode (the rest is set by _open)
        self._pending: tuple | None = None  # (ram, prev_ram, action, actor, score, label) of the last decision
        self._last_score = self._level = 0

    @property
    def pending_key(self) -> tuple[int, int] | None:
        """(episode_id, step) the last observed tick's record will have, if it will become one."""
        return (self.episode_id, self._step) if self._pending is not None else None

    @property
    def in_episode(self) -> bool:
        return self.episode_id is not None

    def observe(self, tick: Tick, prev_ram: np.ndarray | None, decision: tuple[int, ...] | None,
                evaluation: bool = False) -> tuple[list[Record], list[EpisodeSummary]]:
        """One tick, the RAM of the decision tick before it, and (actor, action, expert_action) on
        decision ticks."""
        records: list[Record] = []
        ends: list[EpisodeSummary] = []
        if tick.kind is TickKind.START:
            self.game_id += 1
        if tick.kind in DEATHS:
            if self.in_episode:
                if self._pending is not None:
                    records.append(self._outcome(tick.score, died=True))
                ends.append(self._close(tick.score, tick.level, "terminal", tick.kind is TickKind.GAME_OVER))
            return records, ends
        if not tick.decides:
            return records, ends
        if decision is None:
            raise ValueError(f"a {tick.kind.name} tick needs a decision (actor, action)")
        score = tick.score
        if self._pending is not None:
            records.append(self._outcome(score, died=False))
        if not self.in_episode:
            self._open(score, evaluation)
        actor, action, *label = decision
        label = label[0] if label else expert_labels(actor, action)   # as TransitionBatch derives it
        self._pending = (tick.ram, prev_ram, int(action), int(actor), score, int(label))
        self._last_score, self._level = score, tick.level
        return records, ends

    def truncate(self) -> tuple[list[Record], list[EpisodeSummary]]:
        """Cut the open episode (MAME lost, worker stopping, env reset)."""
        if not self.in_episode:
            return [], []
        records = []
        if self._pending is not None:
            ram, prev_ram, _, actor, _, _ = self._pending
            records.append(Record(self.episode_id, self._step, actor, -1, 0.0, 0.0, False, True, ram, prev_ram))
        return records, [self._close(self._last_score, self._level, "truncated", game_over=False)]

    # -- internals -------------------------------------------------------------------------
    def _open(self, score: int, evaluation: bool) -> None:
        self.episode_id = self.next_episode_id
        self.next_episode_id += 1
        self._step = 0
        self._start_score = self._last_score = score
        self._game_reward = self._shaping = 0.0
        self._actors = {}
        self._evaluation = evaluation
        self._pending = None

    def _outcome(self, score: int, died: bool) -> Record:
        ram, prev_ram, action, actor, score_then, label = self._pending
        r = game_reward(score - score_then, died, self.reward)
        shaping = 0.0 if died else self.reward.survival_bonus
        rec = Record(self.episode_id, self._step, actor, action, r, shaping, died, False, ram, prev_ram, label)
        self._step += 1
        self._game_reward += r
        self._shaping += shaping
        self._actors[ACTOR_NAMES[actor]] = self._actors.get(ACTOR_NAMES[actor], 0) + 1
        self._pending = None
        return rec

    def _close(self, score: int, level: int, end: str, game_over: bool) -> EpisodeSummary:
        out = EpisodeSummary(self.stream_id, self.worker_id, self.episode_id, self.game_id, self._evaluation,
                             self._step, self._game_reward, self._shaping, score - self._start_score, score, level,
                             end, game_over, dict(self._actors), self.clock())
        self.episode_id = None
        self._pending = None
        return out
