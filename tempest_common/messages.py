"""Every message the services exchange, as plain dataclasses: the schema (`wire.py` encodes it;
docs/design.md, "Messages", says who sends which to whom over which sockets).

Each field declares its wire type with `_f(...)` (message_fields.py; metadata read by wire.py), so the dataclass's
field order *is* the wire order and there is no second list to keep in sync.  Array fields also
declare their dtypes, ndim and whether they are per-row (all per-row arrays of a message share the
leading batch size B); `Message.validate()` checks those and wire.encode/decode call it, so a
malformed batch is rejected at both ends.

Classes are frozen and compare by identity (eq=False: numpy arrays have no single truth value);
the arrays themselves stay mutable.  No zmq here: the schema is usable without any transport.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from tempest_common.actions import NUM_ACTIONS
from tempest_common.game_state import GameState
from tempest_common.message_fields import (  # noqa: F401  (the bounds and field_specs: part of this schema's API)
    _FLOATS, _FROZEN, MAX_ABS_REWARD, MAX_BATCH_ROWS, MAX_COUNTER, MAX_DICT_ITEMS, MAX_NAME_CHARS, MAX_SCORE,
    MAX_TEXT_CHARS, WIRE_TYPES, Message, _f, _row, field_specs)

# Who chose a transition's action (TransitionBatch.actor, SampleReply.actor, actor_counts keys).
ACTOR_EXPERT, ACTOR_NETWORK, ACTOR_RANDOM, ACTOR_EVALUATION = 0, 1, 2, 3
ACTOR_NAMES = ("expert", "network", "random", "evaluation")
NO_ACTION = -1  # TransitionBatch.action of a truncated episode's last record (bootstrap only)

# A worker's reward settings (Heartbeat, schema 3): the emulator's REWARD_SCALE, REWARD_CLIP,
# DEATH_PENALTY and SURVIVAL_BONUS take exactly these ranges (services/emulator/config.py reads
# them from here), so a heartbeat outside them lies.  The learner bounds Q with them.
REWARD_SETTING_RANGES = {"reward_scale": (0.0, 1.0), "reward_clip": (0.0, MAX_ABS_REWARD),
                         "death_penalty": (0.0, MAX_ABS_REWARD), "survival_bonus": (-10.0, 10.0)}



@dataclass(**_FROZEN)
class TransitionBatch(Message):
    """One-step transitions of one actor stream (one worker process; see docs/design.md "stream").
    Per row: step counts ticks within the episode from 0; state is the vector *before* the action;
    terminal: this action ended the life; truncated: the episode was cut here, so state is only the
    bootstrap state and action is NO_ACTION; expert_action: the expert's (gated) choice on this
    state whoever acted, NO_ACTION when it was not asked (its label for imitation on the network's
    own states: DAgger).  Omitted, it is derived: the action on expert rows, NO_ACTION elsewhere
    (what a schema-1 batch, which has no labels, means).  first_row: the stream-local number of
    the batch's first row (0 for the stream's first row, each row one more), so the replay sees a
    gap or a repeat instead of guessing it (services/replay/README.md, "Accounting"); -1: not
    numbered, what a schema-1 batch means."""
    KIND: ClassVar[str] = "transitions"
    stream_id: str = _f("str")
    worker_id: str = _f("str")
    episode_id: np.ndarray = _row("int64")
    step: np.ndarray = _row("int32")
    actor: np.ndarray = _row("uint8")
    action: np.ndarray = _row("int16")
    reward_game: np.ndarray = _row("float32")
    reward_shaping: np.ndarray = _row("float32")
    terminal: np.ndarray = _row("bool")
    truncated: np.ndarray = _row("bool")
    state: np.ndarray = _row(_FLOATS, ndim=2)
    expert_action: np.ndarray = field(default=None, metadata=_row("int16").metadata)
    first_row: int = field(default=-1, metadata=_f("int").metadata)

    def __post_init__(self):
        if self.expert_action is None:   # frozen: set once, as the constructor would
            object.__setattr__(self, "expert_action", expert_labels(self.actor, self.action))

    def validate(self) -> None:
        super().validate()
        if np.any(self.actor >= len(ACTOR_NAMES)):
            raise ValueError(f"transitions: actor values must be < {len(ACTOR_NAMES)}")
        if self.num_rows() > MAX_BATCH_ROWS:
            raise ValueError(f"transitions: {self.num_rows()} rows, at most {MAX_BATCH_ROWS}")
        if np.any(self.action < NO_ACTION) or np.any(self.action >= NUM_ACTIONS):
            raise ValueError(f"transitions: action must be -1 (truncated) or 0..{NUM_ACTIONS - 1}")
        if np.any(self.expert_action < NO_ACTION) or np.any(self.expert_action >= NUM_ACTIONS):
            raise ValueError(f"transitions: expert_action must be -1 (not asked) or 0..{NUM_ACTIONS - 1}")
        if np.any(self.episode_id < 0) or np.any(self.step < 0):
            raise ValueError("transitions: episode_id and step must be >= 0")
        if not -1 <= self.first_row <= MAX_COUNTER:   # the replay keeps it per stream, as a count
            raise ValueError("transitions: first_row must be -1 (not numbered) or in 0..2^53")
        for name in ("reward_game", "reward_shaping"):
            r = getattr(self, name)
            if not np.all(np.abs(r) <= MAX_ABS_REWARD):   # NaN fails too
                raise ValueError(f"transitions: {name} must be finite with |value| <= {MAX_ABS_REWARD:g}")
        if np.any((self.action == NO_ACTION) != self.truncated):
            raise ValueError("transitions: action == -1 exactly on truncated rows")
        if np.any(self.terminal & self.truncated):
            raise ValueError("transitions: a row cannot be both terminal and truncated")


def expert_labels(actor: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Labels known without asking the expert: its own action on the rows it played, else NO_ACTION."""
    actor, action = np.asarray(actor), np.asarray(action)
    return np.where(actor == ACTOR_EXPERT, action, NO_ACTION).astype(np.int16)


@dataclass(**_FROZEN)
class EpisodeSummary(Message):
    """One episode (= one life) ended.  length in frames; game_reward / shaping_reward: sums over the
    episode; score: points gained in this life; game_score: the game's score at episode end; level
    0-based; actor_counts: actor name -> ticks it acted; wall_time: unix seconds at the end."""
    KIND: ClassVar[str] = "episode"
    ENDS: ClassVar[tuple[str, ...]] = ("terminal", "truncated")
    stream_id: str = _f("str")
    worker_id: str = _f("str")
    episode_id: int = _f("int")
    game_id: int = _f("int")
    evaluation: bool = _f("bool")
    length: int = _f("int")
    game_reward: float = _f("float")
    shaping_reward: float = _f("float")
    score: int = _f("int")
    game_score: int = _f("int")
    level: int = _f("int")
    end: str = _f("str")
    game_over: bool = _f("bool")
    actor_counts: dict = _f("dict")
    wall_time: float = _f("float")

    def validate(self) -> None:
        super().validate()
        if self.end not in self.ENDS:
            raise ValueError(f"episode: end must be one of {self.ENDS}, got {self.end!r}")
        if not 0 <= self.length <= MAX_COUNTER or not 0 <= self.episode_id <= MAX_COUNTER \
                or not 0 <= self.game_id <= MAX_COUNTER:
            raise ValueError("episode: length, episode_id and game_id must be in 0..2^53")
        if not -MAX_SCORE <= self.score <= MAX_SCORE or not 0 <= self.game_score <= MAX_SCORE:
            raise ValueError(f"episode: |score| and game_score must be <= {MAX_SCORE}")
        if not 0 <= self.level <= 255:
            raise ValueError("episode: level must be in 0..255")
        if not (np.isfinite(self.game_reward) and np.isfinite(self.shaping_reward) and np.isfinite(self.wall_time)):
            raise ValueError("episode: game_reward, shaping_reward and wall_time must be finite")
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_COUNTER
                   for v in self.actor_counts.values()):
            raise ValueError("episode: actor_counts values must be ints in 0..2^53")


@dataclass(**_FROZEN)
class Heartbeat(Message):
    """Worker liveness and throughput: counters since the worker started, frames = decided ticks,
    video_fps = MAME video frames per second (docs/design.md, Units).  Since schema 3 also the
    worker's reward settings, what its rows' rewards are made of (services/emulator/episodes.py):
    per tick, reward_game = clip(score delta x reward_scale, +-reward_clip) - death_penalty on the
    death edge, reward_shaping = survival_bonus on every other tick.  All four NaN: unknown (what a
    schema-2 heartbeat, which lacks them, means; also the default); else each must be finite and in
    REWARD_SETTING_RANGES."""
    KIND: ClassVar[str] = "heartbeat"
    worker_id: str = _f("str")
    frames_total: int = _f("int")
    episodes_total: int = _f("int")
    video_fps: float = _f("float")
    frames_per_s: float = _f("float")
    wall_time: float = _f("float")
    reward_scale: float = field(default=float("nan"), metadata=_f("float").metadata)
    reward_clip: float = field(default=float("nan"), metadata=_f("float").metadata)
    death_penalty: float = field(default=float("nan"), metadata=_f("float").metadata)
    survival_bonus: float = field(default=float("nan"), metadata=_f("float").metadata)

    @property
    def rewards_known(self) -> bool:
        """Whether this heartbeat carries the worker's reward settings (schema 3 with them set)."""
        return not np.isnan(self.reward_scale)

    def validate(self) -> None:
        super().validate()
        # a counter near 2^64 once pushed the learner's global frames past 64 bits (a crash loop)
        if not 0 <= self.frames_total <= MAX_COUNTER or not 0 <= self.episodes_total <= MAX_COUNTER:
            raise ValueError("heartbeat: frames_total and episodes_total must be in 0..2^53")
        if not all(np.isfinite(v) and v >= 0 for v in (self.video_fps, self.frames_per_s)):
            raise ValueError("heartbeat: video_fps and frames_per_s must be finite and >= 0")
        rewards = {name: getattr(self, name) for name in REWARD_SETTING_RANGES}
        if all(np.isnan(v) for v in rewards.values()):
            return   # unknown (schema 2)
        for name, (lo, hi) in REWARD_SETTING_RANGES.items():
            if not lo <= rewards[name] <= hi:   # NaN fails too: the four are known together or not at all
                raise ValueError(f"heartbeat: {name} must be finite and in [{lo:g}, {hi:g}] "
                                 f"(all four NaN: unknown), got {rewards[name]!r}")


@dataclass(**_FROZEN)
class ExpertRequest(Message):
    """Batched expert query: states is a batched GameState (B >= 0)."""
    KIND: ClassVar[str] = "expert_request"
    request_id: int = _f("int")
    states: GameState = _f("game_state")


@dataclass(**_FROZEN)
class ExpertReply(Message):
    """Expert answer: joint action indices, or an error (None if ok)."""
    KIND: ClassVar[str] = "expert_reply"
    request_id: int = _f("int")
    actions: np.ndarray = _row("int16")
    error: str | None = _f("optional_str")

    @classmethod
    def failure(cls, request_id: int, error: str) -> "ExpertReply":
        return cls(request_id, np.zeros(0, np.int16), error)


@dataclass(**_FROZEN)
class SampleRequest(Message):
    """Draw batch_size samples, built at sample time with this n_step and gamma (a live change applies
    at once); beta: the importance-weight exponent; wait_s: seconds the replay may wait for the
    samples-per-insert cap (0 = refuse at once)."""
    KIND: ClassVar[str] = "sample_request"
    request_id: int = _f("int")
    batch_size: int = _f("int")
    n_step: int = _f("int")
    gamma: float = _f("float")
    prioritized: bool = _f("bool")
    beta: float = _f("float")
    wait_s: float = _f("float")

    def validate(self) -> None:
        super().validate()
        if self.batch_size < 0 or self.n_step < 1 or self.wait_s < 0:
            raise ValueError("sample_request: need batch_size >= 0, n_step >= 1, wait_s >= 0")


@dataclass(**_FROZEN)
class SampleReply(Message):
    """error is None when ok (else the arrays are empty, B=0).  index: replay slots, for
    PriorityUpdate; reward: the n-step discounted game+shaping return; discount: gamma^h for the
    bootstrap from next_state, 0 when the episode terminated; weight: importance-sampling weights
    (1 when uniform); expert_action: the row's expert label (TransitionBatch), NO_ACTION if none."""
    KIND: ClassVar[str] = "sample_reply"
    request_id: int = _f("int")
    error: str | None = _f("optional_str")
    index: np.ndarray = _row("uint64")
    state: np.ndarray = _row(_FLOATS, ndim=2)
    action: np.ndarray = _row("int16")
    reward: np.ndarray = _row("float32")
    discount: np.ndarray = _row("float32")
    next_state: np.ndarray = _row(_FLOATS, ndim=2)
    weight: np.ndarray = _row("float32")
    actor: np.ndarray = _row("uint8")
    expert_action: np.ndarray = _row("int16")

    def validate(self) -> None:
        super().validate()
        s, n = self.state, self.next_state
        if s.shape != n.shape or s.dtype != n.dtype:
            raise ValueError(f"sample_reply: state {s.dtype}{s.shape} != next_state {n.dtype}{n.shape}")

    @classmethod
    def failure(cls, request_id: int, error: str, state_dim: int = 0) -> "SampleReply":
        e = lambda dt: np.zeros(0, dt)  # noqa: E731
        s = np.zeros((0, state_dim), np.float32)
        return cls(request_id, error, e(np.uint64), s, e(np.int16), e(np.float32),
                   e(np.float32), s, e(np.float32), e(np.uint8), e(np.int16))


@dataclass(**_FROZEN)
class PriorityUpdate(Message):
    """New priorities (> 0 expected) for sampled replay slots."""
    KIND: ClassVar[str] = "priority_update"
    request_id: int = _f("int")
    index: np.ndarray = _row("uint64")
    priority: np.ndarray = _row("float32")


@dataclass(**_FROZEN)
class Ack(Message):
    """Generic reply to a request without a payload: error is None if ok."""
    KIND: ClassVar[str] = "ack"
    request_id: int = _f("int")
    error: str | None = _f("optional_str")


@dataclass(**_FROZEN)
class WeightsSchedule(Message):
    """Network weights and the exploration schedule in force.  version is monotonic within one
    incarnation of the learner (subscribers ignore older ones); incarnation names the learner
    process that publishes (its run id and start), so a restarted learner or a new run, whose
    versions may start lower, is taken at once instead of ignored until it catches up;
    global_frames: the run's frame count the schedule was computed from."""
    KIND: ClassVar[str] = "weights"
    version: int = _f("int")
    weights: dict = _f("arrays")
    expert_ratio: float = _f("float")
    epsilon: float = _f("float")
    evaluation_share: float = _f("float")
    evaluation_epsilon: float = _f("float")
    global_frames: int = _f("int")
    wall_time: float = _f("float")
    incarnation: str = _f("str")


@dataclass(**_FROZEN)
class ControlRequest(Message):
    """Live settings: op "get" (settings: ignored, may be empty) or "set" (name -> new value);
    op "rollback" (settings: {} or {"step": N}) restores the networks of a checkpoint.
    token: the learner's control token (CONTROL_TOKEN_FILE); "set" and "rollback" are refused without it."""
    KIND: ClassVar[str] = "control_request"
    OPS: ClassVar[tuple[str, ...]] = ("get", "set", "rollback")
    request_id: int = _f("int")
    op: str = _f("str")
    settings: dict = _f("dict")
    token: str = _f("str")

    def validate(self) -> None:
        super().validate()
        if self.op not in self.OPS:
            raise ValueError(f"control_request: op must be one of {self.OPS}, got {self.op!r}")


@dataclass(**_FROZEN)
class ControlReply(Message):
    """settings: all settings in force after the op; error: why not ok (else None)."""
    KIND: ClassVar[str] = "control_reply"
    request_id: int = _f("int")
    ok: bool = _f("bool")
    settings: dict = _f("dict")
    error: str | None = _f("optional_str")




@dataclass(**_FROZEN)
class PriorityReset(Message):
    """Learner -> replay: forget the maximum priority seen (and the running mean behind
    PER_NEW_PRIORITY_CAP), so new rows enter at the initial priority again instead of one a
    divergence ratcheted up; sent after a rollback.  Answered with an Ack."""
    KIND: ClassVar[str] = "priority_reset"
    request_id: int = _f("int")


MESSAGE_TYPES: dict[str, type[Message]] = {
    c.KIND: c for c in (TransitionBatch, EpisodeSummary, Heartbeat, ExpertRequest, ExpertReply,
                        SampleRequest, SampleReply, PriorityUpdate, Ack, WeightsSchedule,
                        ControlRequest, ControlReply, PriorityReset)
}
