"""Who acts on a tick: the expert (probability expert_ratio), else the network, epsilon-greedy.

The network arrives with the learner issue; until weights are published its turns are random
(actor "random").  The expert is asked through its client; when it does not answer in time the
tick is played randomly and the expert is left alone for a back-off period, so a dead expert
costs one timeout per back-off, not one per tick.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from tempest_common.actions import NUM_ACTIONS, gate_zap
from tempest_common.game_state import GameState
from tempest_common.messages import ACTOR_EXPERT, ACTOR_RANDOM

from ..expert.client import ExpertClient, ExpertError
from .metrics import WorkerMetrics

log = logging.getLogger("emulator.actors")


class ActorChooser:
    def __init__(self, expert: ExpertClient | None, expert_ratio: float, epsilon: float,
                 expert_timeout_ms: float, expert_backoff_s: float, metrics: WorkerMetrics,
                 rng: np.random.Generator):
        self.expert = expert
        self.expert_ratio = expert_ratio
        self.epsilon = epsilon
        self.expert_timeout_ms = expert_timeout_ms
        self.expert_backoff_s = expert_backoff_s
        self.metrics = metrics
        self.rng = rng
        self._expert_retry_at = 0.0
        # Pre-drawn randomness: one draw per tick from a block keeps the hot path cheap.
        self._uniform = np.empty(0)
        self._actions = np.empty(0, np.int64)
        self._k = 0

    def _draw(self) -> tuple[float, int]:
        if self._k >= len(self._uniform):
            self._uniform = self.rng.random(4096)
            self._actions = self.rng.integers(0, NUM_ACTIONS, 4096)
            self._k = 0
        u, a = self._uniform[self._k], int(self._actions[self._k])
        self._k += 1
        return u, a

    def choose(self, state_fn, zaps_used: int, ticks_since_zap: int) -> tuple[int, int]:
        """(actor, action) for this tick.  `state_fn()` decodes the GameState only when needed."""
        u, random_action = self._draw()
        if u < self.expert_ratio and self.expert is not None and time.monotonic() >= self._expert_retry_at:
            action = self._ask_expert(state_fn())
            if action is not None:
                return ACTOR_EXPERT, action
        action = int(gate_zap(random_action, zaps_used, ticks_since_zap))
        return ACTOR_RANDOM, action

    def _ask_expert(self, state: GameState) -> int | None:
        batch = GameState.stack([state])
        try:
            actions = self.expert.act(batch, self.expert_timeout_ms)
        except ExpertError as exc:
            self.metrics.malformed.labels(peer="expert", reason=exc.reason).inc()
            log.warning("expert reply rejected: %s", exc)
            actions = None
        if actions is None or len(actions) != 1 or not 0 <= int(actions[0]) < NUM_ACTIONS:
            self.metrics.expert_timeouts.inc()
            self._expert_retry_at = time.monotonic() + self.expert_backoff_s
            return None
        return int(actions[0])
