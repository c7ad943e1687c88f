"""Learner configuration: static settings (addresses, device, paths) and the live settings,
every knob of the incident analysis, readable and changeable at run time (control endpoint).

Both are environment-variable dataclasses (tempest_common.config); a live change goes through
the same validation, so `lr=5` is refused with the same message as `LR=5` at start.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tempest_common.config import ConfigError, check, load_config, parse, setting
from tempest_common.state_vector import STATE_SIZE

log = logging.getLogger("learner.settings")

# Why these bounds: a sample reply of 2^16 rows of 408 float32 states is ~200 MB, and the learner
# keeps 2 x GRADIENT_ACCUMULATION_STEPS of them in flight; a live `set batch_size=1000000000` must
# not be able to ask the replay for (or the GPU to hold) more than that.
MAX_BATCH_SIZE = 1 << 16
MAX_ROWS_PER_STEP = 1 << 20     # batch_size x gradient_accumulation_steps


@dataclass(frozen=True)
class LearnerConfig:
    replay_addr: str = setting("REPLAY_ADDR", "tcp://127.0.0.1:5560", help="replay ROUTER (samples, priorities)")
    episodes_bind: str = setting("LEARNER_EPISODES_BIND", "tcp://*:5557",
                                 help="PULL for episode summaries and heartbeats from workers")
    weights_bind: str = setting("WEIGHTS_BIND", "tcp://*:5558", help="PUB for weights + schedule")
    control_bind: str = setting("CONTROL_BIND", "tcp://*:5559", help="ROUTER for live settings (ctl CLI)")
    metrics_port: int = setting("METRICS_PORT", 9104, min=0, max=65535, help="Prometheus /metrics port (0 = off)")
    metrics_interval_s: float = setting(
        "METRICS_INTERVAL_S", 5.0, min=0.1, max=3600.0,
        help="Q, loss, gradient norm and clip ratio are exported as min / max / mean over the steps of this many "
             "seconds (Prometheus' scrape interval)")
    device: str = setting("DEVICE", "auto", choices=("auto", "cpu", "cuda"), help="auto = cuda when available")
    torch_threads: int = setting(
        "TORCH_THREADS", 0, min=0, max=1024,
        help="torch CPU threads (0 = half the cores, at least 1: the learner shares the machine with MAME, "
             "and threads beyond the free cores made each step ~5x slower)")
    hidden: str = setting("HIDDEN", "512,512,256", help="hidden layer widths of the dueling network")
    layer_norm: bool = setting("LAYER_NORM", False,
                               help="LayerNorm in each hidden block: Linear -> LayerNorm -> ReLU")
    state_dim: int = setting("STATE_DIM", STATE_SIZE, min=1, max=100_000, help="state vector length")
    checkpoint_dir: str = setting("CHECKPOINT_DIR", "run/checkpoints", help="where checkpoints go")
    checkpoint_every_s: float = setting("CHECKPOINT_EVERY_S", 300.0, min=1.0, max=86_400.0,
                                        help="periodic checkpoint interval (also on SIGTERM)")
    checkpoint_every_frames: int = setting(
        "CHECKPOINT_EVERY_FRAMES", 250_000, min=0, max=10**12,
        help="also keep a checkpoint mark-<frames>.pt at every multiple of this many global frames (0 = off)")
    control_token_file: str = setting(
        "CONTROL_TOKEN_FILE", "",
        help="file with the secret a control 'set' must carry: kept if present, else written at start, mode 0600 "
             "('' = CHECKPOINT_DIR/control-token)")
    resume: bool = setting("RESUME", True, help="resume from the newest rolling checkpoint-*.pt in CHECKPOINT_DIR")
    run_id: str = setting("RUN_ID", "", help="run name in checkpoints (default: new id, or the resumed run's)")
    seed: int = setting("SEED", -1, min=-1, max=2**31 - 1, help="torch seed (-1: random)")

    def hidden_sizes(self) -> tuple[int, ...]:
        try:
            sizes = tuple(int(x) for x in self.hidden.split(","))
        except ValueError:
            sizes = ()
        if not sizes or min(sizes) < 1:
            raise ConfigError(f"HIDDEN={self.hidden} is not a comma-separated list of positive widths")
        return sizes


@dataclass(frozen=True)
class LiveSettings:
    lr: float = setting("LR", 0.001, min=1e-7, max=1.0, help="Adam learning rate (the seed: 0.003 was too high)")
    # Decayed, 1e-3 -> 1e-4 over 50k steps (the learning benchmark's 800k frames at 16 samples per
    # frame, batch 256): fast imitation early, Rainbow / R2D2's small lr late.  At 800k frames
    # 13,481 +- 2,149 points per life against 10,840 +- 2,070 at a constant 1e-3, and higher at
    # each of the 4 marks (bench/learning.py, issue 13).
    lr_schedule: str = setting("LR_SCHEDULE", "cosine", choices=("none", "cosine"),
                               help="none = constant lr; cosine = decays to lr_min over lr_schedule_steps, then stays")
    lr_min: float = setting("LR_MIN", 0.0001, min=0.0, max=1.0, help="cosine schedule floor")
    lr_schedule_steps: int = setting("LR_SCHEDULE_STEPS", 50_000, min=1, max=10**10, help="cosine period (steps)")
    use_soft_target: bool = setting("USE_SOFT_TARGET", True, help="blend the target network every step")
    tau: float = setting("TAU", 0.005, min=0.0, max=1.0, help="soft target blend per optimizer step")
    hard_target_refresh_every_steps: int = setting("HARD_TARGET_REFRESH_EVERY_STEPS", 25_000, min=0, max=10**9,
                                                   help="hard copy to the target every N steps (0 = never)")
    n_step: int = setting("N_STEP", 5, min=1, max=100, help="n of the n-step returns (built by the replay)")
    gamma: float = setting("GAMMA", 0.995, min=0.0, max=1.0, help="discount")
    gradient_accumulation_steps: int = setting("GRADIENT_ACCUMULATION_STEPS", 1, min=1, max=256,
                                               help="micro-batches per optimizer step")
    # 256-row batches at 16 samples per frame: 8x the optimizer steps of 1024 at 8 for twice the
    # compute (2 cores: ~20 steps/s beside MAME); at 120k frames 6,142 +- 2,687 points per life
    # against 5,821 +- 2,838 (bench/learning.py --ablation, issue 13).
    training_steps_per_sample: float = setting(
        "TRAINING_STEPS_PER_SAMPLE", 16.0, min=0.0, max=1e6,
        help="pacing: transitions trained on per transition collected (0 = as fast as possible)")
    batch_size: int = setting("BATCH_SIZE", 256, min=1, max=MAX_BATCH_SIZE,
                              help="rows per micro-batch (BATCH_SIZE x GRADIENT_ACCUMULATION_STEPS <= 1048576)")
    max_grad_norm: float = setting("MAX_GRAD_NORM", 5.0, min=0.0, max=1e6, help="global L2 clip (0 = off)")
    clamp_targets: bool = setting("CLAMP_TARGETS", False, help="clamp TD targets (emergency brake)")
    target_clamp_value: float = setting("TARGET_CLAMP_VALUE", 50.0, min=0.0, max=1e9, help="|target| limit")
    prioritized: bool = setting("PRIORITIZED", True, help="prioritized replay sampling")
    per_beta: float = setting("PER_BETA", 0.4, min=0.0, max=1.0, help="importance-weight exponent")
    per_beta_end: float = setting(
        "PER_BETA_END", 0.4, min=0.0, max=1.0,
        help="beta reached after PER_BETA_FRAMES global frames, linear from PER_BETA (only when that is > 0)")
    per_beta_frames: int = setting("PER_BETA_FRAMES", 0, min=0, max=10**12,
                                   help="global frames over which beta anneals to PER_BETA_END (0 = off: PER_BETA)")
    # DQfD's large-margin loss on expert rows, on by default: at 120k frames it took the network from
    # ~900 to ~3,000-5,800 points per life (bench/learning.py --ablation, issue 13).  The margin is a
    # few ticks' rewards (a tick earns ~0.016 at REWARD_SCALE 0.01), not DQfD's 0.8 (~50 ticks' worth).
    bc_weight: float = setting("BC_WEIGHT", 1.0, min=0.0, max=100.0, help="DQfD margin-loss weight (expert rows)")
    bc_margin: float = setting("BC_MARGIN", 0.05, min=0.0, max=1000.0,
                               help="DQfD margin: how far every non-expert action's Q must fall below the expert's")
    bc_weight_decay_frames: int = setting(
        "BC_WEIGHT_DECAY_FRAMES", 0, min=0, max=10**12,
        help="global frames over which the BC weight decays linearly to BC_WEIGHT_MIN_FRACTION x BC_WEIGHT "
             "(0 = constant)")
    bc_weight_min_fraction: float = setting("BC_WEIGHT_MIN_FRACTION", 0.0, min=0.0, max=1.0,
                                            help="floor of the decayed BC weight, as a fraction of BC_WEIGHT")
    expert_ratio_start: float = setting("EXPERT_RATIO_START", 0.95, min=0.0, max=1.0, help="expert share at frame 0")
    # 0.98 per 10k frames: the expert's share 0.95 -> ~0.63 at 200k frames, ~0.19 at 800k (0.996 left
    # 0.69 at 800k): the data moves to the network's own states (with ACTOR_DRAW=segment; issue 13).
    expert_ratio_decay: float = setting("EXPERT_RATIO_DECAY", 0.98, min=0.0, max=1.0,
                                        help="multiplier per EXPERT_RATIO_DECAY_FRAMES global frames")
    expert_ratio_decay_frames: int = setting("EXPERT_RATIO_DECAY_FRAMES", 10_000, min=1, max=10**12,
                                             help="frames per decay step")
    expert_ratio_min: float = setting("EXPERT_RATIO_MIN", 0.10, min=0.0, max=1.0, help="floor of the expert share")
    epsilon: float = setting("EPSILON", 0.1, min=0.0, max=1.0, help="random actions on the network's turns")
    evaluation_share: float = setting(
        "EVALUATION_SHARE", 0.05, min=0.0, max=1.0,
        help="probability, at the end of each training life, that an evaluation game follows "
             "(the first one after the network is ready always does)")
    evaluation_epsilon: float = setting("EVALUATION_EPSILON", 0.01, min=0.0, max=1.0,
                                        help="epsilon in evaluation games")
    publish_every_steps: int = setting("PUBLISH_EVERY_STEPS", 50, min=1, max=10**9,
                                       help="publish weights + schedule every N optimizer steps")


def load_live_settings(environ=None) -> LiveSettings:
    return check_live(load_config(LiveSettings, environ))


def load_learner_config(environ=None) -> LearnerConfig:
    return load_config(LearnerConfig, environ)


def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(LiveSettings)}


def apply_changes(current: LiveSettings, changes: dict) -> LiveSettings:
    """Validated copy of `current` with `changes` ({name: value}; values may be strings as typed
    on a command line).  ConfigError names the setting and its allowed range."""
    known = _fields()
    updates = {}
    for name, value in changes.items():
        f = known.get(name)
        if f is None:
            raise ConfigError(f"unknown setting {name!r}: known settings are {', '.join(sorted(known))}")
        meta = f.metadata["setting"]
        shown = value if isinstance(value, str) else None
        if isinstance(value, str) and meta["type"] is not str:
            value = parse(meta, value, name)
        elif meta["type"] is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif not isinstance(value, meta["type"]) or (meta["type"] is int and isinstance(value, bool)):
            raise ConfigError(f"{name}={value!r} has the wrong type: expected {meta['type'].__name__}")
        updates[name] = check(meta, value, name, shown=shown)
    return check_live(dataclasses.replace(current, **updates))


def check_live(s: LiveSettings) -> LiveSettings:
    """`s` if its settings fit together (the checks one setting's range cannot make); ConfigError
    otherwise.  Both at start and on every live change."""
    if s.lr_schedule == "cosine" and s.lr_min > s.lr:
        raise ConfigError(f"lr_min={s.lr_min} must not exceed lr={s.lr}")
    rows = s.batch_size * s.gradient_accumulation_steps
    if rows > MAX_ROWS_PER_STEP:
        raise ConfigError(f"batch_size x gradient_accumulation_steps = {s.batch_size} x "
                          f"{s.gradient_accumulation_steps} = {rows} rows per optimizer step: "
                          f"at most {MAX_ROWS_PER_STEP}")
    return s


class SettingChangeLog:
    """Every live setting change, before and after: one JSON line each in
    CHECKPOINT_DIR/setting-changes.jsonl (the run's history, which a diagnosis reads), and
    `on_change(name, before, unix_time)` (metrics: a dashboard marks the change)."""

    FILE = "setting-changes.jsonl"

    def __init__(self, checkpoint_dir: str, on_change: Callable[[str, object, float], None]):
        self.path = Path(checkpoint_dir) / self.FILE
        self.on_change = on_change

    def record(self, name: str, before, after, step: int) -> None:
        at = time.time()
        self.on_change(name, before, at)
        line = json.dumps({"time": round(at, 3), "step": step, "name": name, "before": before, "after": after})
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(line + "\n")
        except OSError as exc:   # the change stands: losing its log line must not refuse it
            log.warning("could not log a setting change to %s: %s", self.path, exc.strerror or exc)
