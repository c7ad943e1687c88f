"""The run's bookkeeper (pure: no I/O, no clock): global frames, the exploration schedule, and
the performance figures, all from what the workers report.

Global frames: every worker's heartbeat carries its own frame counter; the bookkeeper adds the
increase since that worker's previous heartbeat (a counter that went down means the worker
restarted, and its new value counts in full).  An increase over MAX_FRAMES_PER_HEARTBEAT is not
believed: it counts nothing, and its value becomes that worker's baseline (a forged or corrupt
counter then costs at most one restart's worth of frames; a fresh run's first heartbeat from a
long-running worker counts nothing, rightly).  At most MAX_WORKERS worker ids are remembered (the
least recently heard is forgotten first), each by at most MAX_WORKER_KEY characters (a longer id
is kept as its head and a hash), so random or huge ids cannot grow the books without bound.
Episode summaries count episodes and feed the performance windows (each at most
MAX_WINDOW_RECORDS entries):
  - an evaluation game (episodes flagged `evaluation`, same stream and game id) ends with the
    life whose summary says game_over; its score is the game's BCD score then;
  - DQN1M / DQN5M: mean evaluation-game score over the last 1M / 5M global frames;
  - 5M slope: least-squares slope of those scores against the global frame at which each game
    ended, per million frames;
  - per life beside per game: the mean points gained in an evaluation life that ended terminal
    (EpisodeSummary.score; a truncated life was cut short, not lost) over the same windows: it has
    data from the first evaluation life on, before any evaluation game is over;
  - how many games and lives each window's mean is over;
  - episode reward slope: slope of the last 20 episodes' game rewards against episode index,
    times 20 (the seed's RwdSlope).
Schedule: expert_ratio = max(floor, start * decay ** (frames / decay_every)); epsilon is a live
setting.  state_dict() / load_state_dict() carry all of it through checkpoints.
Reward settings (issue 16): each worker's latest heartbeat that carries them (schema 3; a schema-2
heartbeat says nothing and changes nothing), at most MAX_WORKERS (the least recently reporting
forgotten first); q_bound(gamma) is the widest Q bound over them (qbound.py), None until one
reported.  Not checkpointed: every worker reports again within its HEARTBEAT_S.  A worker restarted
with other settings counts with its new ones only (its older rows may still be in the replay).
"""
from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass

import numpy as np

from tempest_common.messages import MAX_COUNTER, EpisodeSummary, Heartbeat

from .qbound import RewardSettings, q_bound, widest

WINDOWS = {"1M": 1_000_000, "5M": 5_000_000}
REWARD_SLOPE_EPISODES = 20
# A worker decides ~1,000 ticks a second and heartbeats every HEARTBEAT_S (1 s; at most 60 s):
# a million frames between two heartbeats is many times anything real.
MAX_FRAMES_PER_HEARTBEAT = 1_000_000
MAX_WORKERS = 10_000
MAX_WORKER_KEY = 64     # real worker ids are "emulator-5600" or "host-pid"
# An evaluation life is hundreds of frames at least: 5M frames hold ~10,000 lives.
MAX_WINDOW_RECORDS = 100_000


@dataclass(frozen=True)
class Schedule:
    expert_ratio: float
    epsilon: float


def expert_ratio(frames: int, start: float, decay: float, decay_every: int, floor: float) -> float:
    return max(floor, start * decay ** (frames / decay_every))


def slope(x, y) -> float:
    """Least-squares slope of y against x (0 with fewer than two distinct x)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or np.ptp(x) == 0:
        return 0.0
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc * xc).sum())


class Bookkeeper:
    def __init__(self):
        self.global_frames = 0
        self.episodes = 0
        self._worker_frames: dict[str, int] = {}
        # (global frame at end, game score) / (global frame at end, points in the life)
        self._eval_games: deque[tuple[int, float]] = deque(maxlen=MAX_WINDOW_RECORDS)
        self._eval_lives: deque[tuple[int, float]] = deque(maxlen=MAX_WINDOW_RECORDS)
        self._rewards: deque[float] = deque(maxlen=REWARD_SLOPE_EPISODES)
        self.last_eval_score: float | None = None
        self._reward_settings: dict[str, RewardSettings] = {}   # worker -> latest reported, oldest first
        self._reward_kinds: dict[RewardSettings, int] = {}      # distinct settings -> workers reporting them

    # -- input ----------------------------------------------------------------------------------
    def on_heartbeat(self, hb: Heartbeat) -> int | None:
        """The frames this heartbeat added; None when its increase was implausible (it added none)."""
        worker = worker_key(hb.worker_id)
        self._note_rewards(worker, RewardSettings.of(hb))
        last = self._worker_frames.pop(worker, 0)   # re-inserted last: most recently heard
        delta = hb.frames_total - last if hb.frames_total >= last else hb.frames_total
        self._worker_frames[worker] = hb.frames_total
        if len(self._worker_frames) > MAX_WORKERS:
            del self._worker_frames[next(iter(self._worker_frames))]
        if not 0 <= delta <= MAX_FRAMES_PER_HEARTBEAT:
            return None
        self.global_frames += delta
        return delta

    def _note_rewards(self, worker: str, settings: RewardSettings | None) -> None:
        if settings is None:
            return
        self._forget_rewards(self._reward_settings.pop(worker, None))   # re-inserted last: most recent
        self._reward_settings[worker] = settings
        self._reward_kinds[settings] = self._reward_kinds.get(settings, 0) + 1
        if len(self._reward_settings) > MAX_WORKERS:
            self._forget_rewards(self._reward_settings.pop(next(iter(self._reward_settings))))

    def _forget_rewards(self, settings: RewardSettings | None) -> None:
        if settings is not None:
            self._reward_kinds[settings] -= 1
            if not self._reward_kinds[settings]:
                del self._reward_kinds[settings]

    def on_episode(self, ep: EpisodeSummary) -> None:
        self.episodes += 1
        self._rewards.append(ep.game_reward)
        if not ep.evaluation:
            return
        if ep.end == "terminal":
            self._eval_lives.append((self.global_frames, float(ep.score)))
        if ep.game_over:
            self._eval_games.append((self.global_frames, float(ep.game_score)))
            self.last_eval_score = float(ep.game_score)
        horizon = self.global_frames - max(WINDOWS.values())
        for records in (self._eval_games, self._eval_lives):
            while records and records[0][0] < horizon:
                records.popleft()

    # -- output ---------------------------------------------------------------------------------
    def schedule(self, start: float, decay: float, decay_every: int, floor: float, epsilon: float) -> Schedule:
        return Schedule(expert_ratio(self.global_frames, start, decay, decay_every, floor), epsilon)

    def q_bound(self, gamma: float) -> tuple[float, float] | None:
        """(lower, upper) of Q under every reporting worker's reward settings at this gamma (the
        widest when they disagree); None until a worker reported them."""
        return widest(q_bound(settings, gamma) for settings in self._reward_kinds)

    def reward_settings(self) -> dict[str, RewardSettings]:
        """worker -> the reward settings it reported last (a copy)."""
        return dict(self._reward_settings)

    def _window(self, records: deque, name: str) -> list[tuple[int, float]]:
        since = self.global_frames - WINDOWS[name]
        return [(f, s) for f, s in records if f >= since]

    def reward_mean(self, window: str) -> float | None:
        """Mean evaluation-game score in the window (None without a game)."""
        games = self._window(self._eval_games, window)
        return float(np.mean([s for _, s in games])) if games else None

    def life_reward_mean(self, window: str) -> float | None:
        """Mean points of the evaluation lives that ended terminal in the window (None without one)."""
        lives = self._window(self._eval_lives, window)
        return float(np.mean([s for _, s in lives])) if lives else None

    def evaluation_games(self, window: str) -> int:
        return len(self._window(self._eval_games, window))

    def evaluation_lives(self, window: str) -> int:
        return len(self._window(self._eval_lives, window))

    def reward_slope(self, window: str = "5M") -> float:
        games = self._window(self._eval_games, window)
        return slope([f / 1e6 for f, _ in games], [s for _, s in games])

    def episode_reward_slope(self) -> float:
        r = list(self._rewards)
        return slope(np.arange(len(r)), r) * REWARD_SLOPE_EPISODES

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"global_frames": self.global_frames, "episodes": self.episodes,
                "worker_frames": dict(self._worker_frames),
                "eval_games": [list(g) for g in self._eval_games],
                "eval_lives": [list(life) for life in self._eval_lives], "rewards": list(self._rewards),
                "last_eval_score": self.last_eval_score}

    def load_state_dict(self, state: dict) -> None:
        """ValueError (naming the value) when a counter is beyond 2^53: such books are corrupt (a
        forged heartbeat once put 2^64 here), and carrying on would crash or mislead the run."""
        self.global_frames = _counter(state["global_frames"], "global_frames")
        self.episodes = _counter(state["episodes"], "episodes")
        self._worker_frames = {str(k): _counter(v, f"worker_frames[{k!r}]")
                               for k, v in state["worker_frames"].items()}
        self._eval_games = deque(((int(f), float(s)) for f, s in state["eval_games"]), maxlen=MAX_WINDOW_RECORDS)
        self._eval_lives = deque(((int(f), float(s)) for f, s in state.get("eval_lives", ())),  # older: none
                                 maxlen=MAX_WINDOW_RECORDS)
        self._rewards = deque((float(r) for r in state["rewards"]), maxlen=REWARD_SLOPE_EPISODES)
        self.last_eval_score = state.get("last_eval_score")


def worker_key(worker_id: str) -> str:
    """`worker_id`, or for one longer than MAX_WORKER_KEY its head and a hash of the whole."""
    if len(worker_id) <= MAX_WORKER_KEY:
        return worker_id
    digest = hashlib.sha256(worker_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{worker_id[:MAX_WORKER_KEY - 18]}~{digest}"


def _counter(value, name: str) -> int:
    if not 0 <= int(value) <= MAX_COUNTER:
        raise ValueError(f"{name}={int(value)} is outside 0..2^53")
    return int(value)
