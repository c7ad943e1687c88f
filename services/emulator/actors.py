"""Who acts on a decision tick, and which games are evaluation games.

Training games: the expert with probability expert_ratio, else the network, epsilon-greedy
(actor "random" for the epsilon draws, and until the first weights arrive; a random action is
drawn among the non-zap actions unless RANDOM_ZAP: tempest_common.actions.random_actions).  Evaluation games:
the network alone with the evaluation epsilon.  An expert that does not answer in time is left
alone for a back-off period (a dead expert costs one timeout per back-off, not one per tick).
The learner's published schedule replaces expert_ratio and the epsilons as it arrives.

Who plays a training tick is decided by an `ActorSchedule` (ACTOR_DRAW): a fresh draw every
decision tick ("tick", the default), one draw per life ("life"), or one draw per segment of
ACTOR_SEGMENT_TICKS decision ticks ("segment").  The expert's turns fall back to the learner's
epsilon-greedy choice on any tick the expert is unavailable (no client, backing off, no answer).

Imitation labels (`label`, EXPERT_LABELS): every decided row may carry the expert's choice on its
state, whoever acted: on the network's and random ticks (evaluation games too: their rows are
transitions like any other) the expert is asked once more, after the tick is answered, so the
wait overlaps MAME's next tick instead of delaying it.  An expert turn's label is its own action.
Asking for a label follows the expert turns' rules: unavailable (no client, backing off) means no
label, and a label the expert fails to give starts the back-off.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from tempest_common.actions import NUM_ACTIONS, random_actions
from tempest_common.game_state import GameState
from tempest_common.messages import ACTOR_EVALUATION, ACTOR_EXPERT, ACTOR_NETWORK, ACTOR_RANDOM, NO_ACTION

from ..expert.client import ExpertClient, ExpertError
from .metrics import WorkerMetrics
from .network_policy import NetworkPolicy

log = logging.getLogger("emulator.actors")


class ActorSchedule:
    """Who plays the next training decision tick: "expert" or "learner" (pure: the caller supplies
    one uniform draw per decision tick, and the expert ratio in force).

    Modes: "tick" draws on every call (u < expert_ratio -> expert); "life" draws on the first call
    after `life_started()` and holds until the next life; "segment" draws on the first call of a
    life and again every `segment_ticks` calls.  A draw uses the ratio passed with that call, so a
    ratio changed between draws applies at the next draw only.  Before any `life_started()` the
    first call draws (a worker's first life)."""
    EXPERT, LEARNER = "expert", "learner"
    MODES = ("tick", "life", "segment")

    def __init__(self, mode: str = "tick", segment_ticks: int = 200):
        if mode not in self.MODES:
            raise ValueError(f"actor draw mode {mode!r} is not one of {self.MODES}")
        if segment_ticks < 1:
            raise ValueError(f"segment_ticks={segment_ticks} must be at least 1")
        self.mode, self.segment_ticks = mode, segment_ticks
        self.current: str | None = None   # who the last draw chose (None: a draw is due)
        self._ticks = 0                   # calls since the last draw

    def life_started(self) -> None:
        """The next decision tick opens a life: "life" and "segment" draw afresh there."""
        self.current = None

    def who(self, u: float, expert_ratio: float) -> str:
        """The actor for this decision tick; `u` is this tick's uniform draw in [0, 1)."""
        if self.mode == "tick" or self.current is None or (
                self.mode == "segment" and self._ticks >= self.segment_ticks):
            self.current = self.EXPERT if u < expert_ratio else self.LEARNER
            self._ticks = 0
        self._ticks += 1
        return self.current


class ActorChooser:
    def __init__(self, expert: ExpertClient | None, network: NetworkPolicy, expert_ratio: float, epsilon: float,
                 expert_timeout_ms: float, expert_backoff_s: float, metrics: WorkerMetrics,
                 rng: np.random.Generator, schedule: ActorSchedule | None = None, labels: bool = True,
                 random_zap: bool = False):
        self.expert, self.network, self.metrics, self.rng = expert, network, metrics, rng
        self.random_zap = random_zap   # random actions may press the zap (RANDOM_ZAP); see random_actions
        self.labels = labels   # ask the expert for a label on ticks it did not play (EXPERT_LABELS)
        self.schedule = schedule or ActorSchedule()
        self.expert_timeout_ms, self.expert_backoff_s = expert_timeout_ms, expert_backoff_s
        self.follow_schedule(expert_ratio, epsilon, 0.0, 0.0)
        self._expert_retry_at = 0.0
        self._evaluated = False   # an evaluation game has been drawn on this worker
        # Pre-drawn randomness: one block of draws serves many ticks, keeping the hot path cheap.
        self._uniform = np.empty((0, 2))
        self._actions = np.empty(0, np.int64)
        self._k = 0

    def follow_schedule(self, expert_ratio: float, epsilon: float, evaluation_share: float,
                        evaluation_epsilon: float) -> None:
        self.expert_ratio, self.epsilon = expert_ratio, epsilon
        self.evaluation_share, self.evaluation_epsilon = evaluation_share, evaluation_epsilon

    def _draw(self) -> tuple[float, float, int]:
        if self._k >= len(self._actions):
            self._uniform = self.rng.random((4096, 2))
            self._actions = random_actions(self.rng, 4096, self.random_zap)
            self._k = 0
        u, a = self._uniform[self._k], int(self._actions[self._k])
        self._k += 1
        return u[0], u[1], a

    def life_started(self) -> None:
        """A life (episode) opens on the coming decision tick (the worker's signal)."""
        self.schedule.life_started()

    def next_game_is_evaluation(self) -> bool:
        """A draw at evaluation_share; the first one after the network is ready always wins, so
        performance figures have data early in a run."""
        if not self.network.ready:
            return False
        first, self._evaluated = not self._evaluated, True
        return first or self.rng.random() < self.evaluation_share

    def choose(self, state_fn, network_fn, evaluation: bool = False) -> tuple[int, int]:
        """(actor, action) for a decision tick.  `state_fn()` decodes the tick as a batch of one
        GameState and `network_fn()` runs the network, each only when that actor plays.  The game session
        applies the superzapper gate to whatever is chosen."""
        u_actor, u_eps, random_action = self._draw()
        if evaluation and self.network.ready:
            return ACTOR_EVALUATION, random_action if u_eps < self.evaluation_epsilon else int(network_fn())
        expert_turn = self.schedule.who(u_actor, self.expert_ratio) == ActorSchedule.EXPERT
        if expert_turn and self.expert is not None and time.monotonic() >= self._expert_retry_at:
            action = self._ask_expert(state_fn())
            if action is not None:
                return ACTOR_EXPERT, action
        if self.network.ready and u_eps >= self.epsilon:
            return ACTOR_NETWORK, int(network_fn())
        return ACTOR_RANDOM, random_action

    def label(self, actor: int, action: int, state_fn, gate=lambda a: a) -> int:
        """The expert's choice on the tick `choose` just gave to (actor, action), through `gate`
        (the session's superzapper gate of that tick, so a label is what the expert would have
        played), NO_ACTION when there is none: an expert turn's is its action; any other actor's
        is asked of the expert (`state_fn()` decodes the tick) when labels are on and the expert
        is available.  Call it after answering the tick: the wait then overlaps MAME's next one."""
        counter = self.metrics.expert_labels
        if actor == ACTOR_EXPERT:
            counter.labels(result="labelled").inc()
            return gate(int(action))
        if not self.labels:
            return NO_ACTION
        label = None
        if self.expert is not None and time.monotonic() >= self._expert_retry_at:
            label = self._ask_expert(state_fn())
        counter.labels(result="missing" if label is None else "labelled").inc()
        return NO_ACTION if label is None else gate(label)

    def _ask_expert(self, batch: GameState) -> int | None:
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


class EvaluationScheduler:
    """Which games are evaluation games (pure).  Each life that ends draws whether an evaluation
    game comes next (the caller's coin): a training game is left at that death edge, and the
    evaluation game starts from the saved start of play (a load between lives) and lasts until
    its own game over.  A lost MAME cancels everything: the next MAME has no saved start yet."""
    TRAINING, DUE, LOADING, EVALUATING = "training", "due", "loading", "evaluating"

    def __init__(self):
        self.phase = self.TRAINING

    @property
    def evaluating(self) -> bool:
        return self.phase == self.EVALUATING

    def life_ended(self, game_over: bool, next_is_evaluation: bool) -> None:
        if self.phase == self.EVALUATING and not game_over:
            return  # an evaluation game plays all its lives
        self.phase = self.DUE if next_is_evaluation else self.TRAINING

    def should_load(self, between_lives: bool, has_start_state: bool) -> bool:
        return self.phase == self.DUE and between_lives and has_start_state

    def load_sent(self) -> None:
        self.phase = self.LOADING

    def game_loaded(self) -> None:
        self.phase = self.EVALUATING

    def mame_lost(self) -> None:
        self.phase = self.TRAINING
