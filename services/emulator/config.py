"""EmulatorConfig: every setting of an emulator worker, from environment variables."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from tempest_common.config import load_config, setting
from tempest_common.messages import MAX_BATCH_ROWS, REWARD_SETTING_RANGES

_DEFAULT_ID = f"{socket.gethostname()}-{os.getpid()}"
# the reward settings' ranges are the heartbeat's (a worker reports them to the learner, which bounds Q with them)
_LO = {name: lo for name, (lo, _) in REWARD_SETTING_RANGES.items()}
_HI = {name: hi for name, (_, hi) in REWARD_SETTING_RANGES.items()}


@dataclass(frozen=True)
class EmulatorConfig:
    rompath: str = setting("TEMPEST_ROMPATH", "", help="folder holding tempest1/ (required)")
    mame_binary: str = setting("MAME_BINARY", "/usr/games/mame", help="MAME executable")
    worker_id: str = setting("WORKER_ID", _DEFAULT_ID, help="name in metrics and messages (default host-pid)")
    workdir: str = setting("EMULATOR_WORKDIR", "", help="folder for MAME's cfg/nvram/states (default: a temp dir)")
    replay_addr: str = setting("REPLAY_ADDR", "tcp://127.0.0.1:5555",
                               help="replay PULL address for transition batches ('' = none)")
    learner_addr: str = setting("LEARNER_EPISODES_ADDR", "tcp://127.0.0.1:5557",
                                help="learner PULL address for episode summaries and heartbeats ('' = none)")
    weights_addr: str = setting("WEIGHTS_ADDR", "tcp://127.0.0.1:5558",
                                help="learner PUB address for weights + schedule ('' = never use the network)")
    expert_addr: str = setting("EXPERT_ADDR", "tcp://127.0.0.1:5556", help="expert ROUTER address ('' = none)")
    metrics_port: int = setting("METRICS_PORT", 9101, min=0, max=65535, help="Prometheus /metrics port (0 = off)")
    expert_ratio: float = setting("EXPERT_RATIO", 0.95, min=0.0, max=1.0,
                                  help="probability the expert wins an actor draw (see ACTOR_DRAW), until the learner "
                                  "publishes its schedule")
    # Segments (DAgger): the network drives 200-tick stretches and meets the states its own actions
    # lead to, each labelled by the expert.  With the learner's EXPERT_RATIO_DECAY 0.98, at 200k /
    # 400k / 600k / 800k frames: 11,573 / 11,933 / 12,458 / 13,616 points per life, rising at each
    # mark (per tick with 0.996: 12,966 / 14,198 / 11,299 / 13,481) (bench/learning.py, issue 13).
    actor_draw: str = setting("ACTOR_DRAW", "segment", choices=("tick", "life", "segment"),
                              help="how often training games draw expert-or-network: every decision tick, once "
                              "per life, or every ACTOR_SEGMENT_TICKS decision ticks and at each life's start")
    actor_segment_ticks: int = setting("ACTOR_SEGMENT_TICKS", 200, min=1, max=100_000,
                                       help="decision ticks per actor draw when ACTOR_DRAW=segment")
    epsilon: float = setting("EPSILON", 0.1, min=0.0, max=1.0, help="random-action probability on the network's turns")
    random_zap: bool = setting("RANDOM_ZAP", False,
                               help="random actions (epsilon, before the first weights) may press the superzapper; "
                               "off: drawn among the 22 non-zap actions, so chance does not spend the level's zaps")
    expert_timeout_ms: float = setting("EXPERT_TIMEOUT_MS", 50.0, min=1.0, max=10_000.0,
                                       help="wait this long for the expert, then the network plays the tick "
                                       "(random until weights arrive)")
    expert_backoff_s: float = setting("EXPERT_BACKOFF_S", 2.0, min=0.0, max=600.0,
                                      help="after an expert timeout, leave the expert's turns to the network this long")
    expert_labels: bool = setting("EXPERT_LABELS", True,
                                  help="ask the expert for its action on the network's and random ticks too (after "
                                  "the tick is answered), as an imitation label on those rows; off: only the "
                                  "expert's own rows are labelled")
    transition_batch: int = setting("TRANSITION_BATCH", 64, min=1, max=MAX_BATCH_ROWS,
                                    help="records per transition batch (at most what the replay takes)")
    state_dtype: str = setting("STATE_DTYPE", "float16", choices=("float16", "float32"), help="state dtype on the wire")
    send_hwm: int = setting("SEND_HWM", 1000, min=1, max=1_000_000,
                            help="messages buffered per peer while it is away; beyond that they are dropped and counted")
    reward_scale: float = setting("REWARD_SCALE", 0.01, min=_LO["reward_scale"], max=_HI["reward_scale"],
                                  help="reward per game point")
    reward_clip: float = setting("REWARD_CLIP", 10.0, min=_LO["reward_clip"], max=_HI["reward_clip"],
                                  help="per-step clip of the scaled score delta")
    death_penalty: float = setting("DEATH_PENALTY", 5.0, min=_LO["death_penalty"], max=_HI["death_penalty"],
                                    help="reward subtracted on a death")
    survival_bonus: float = setting("SURVIVAL_BONUS", 0.0, min=_LO["survival_bonus"], max=_HI["survival_bonus"],
                                    help="shaping reward per tick alive (stored apart from the game reward)")
    stall_timeout_s: float = setting("STALL_TIMEOUT_S", 10.0, min=1.0, max=600.0,
                                     help="restart MAME when no game tick arrives for this long")
    startup_timeout_s: float = setting("STARTUP_TIMEOUT_S", 60.0, min=5.0, max=600.0,
                                       help="time MAME may take to start and connect")
    heartbeat_s: float = setting("HEARTBEAT_S", 1.0, min=0.1, max=60.0, help="heartbeat period to the learner")
    trace_path: str = setting("TRACE_PATH", "", help="debug: on stop, write every tick's RAM and the record it became "
                              "(episode, step) to this .npz (tests use it; memory grows ~1 KB per tick)")
    seed: int = setting("SEED", -1, min=-1, max=2**31 - 1, help="RNG seed for actor choice and random actions (-1: random)")


def load_emulator_config(environ=None) -> EmulatorConfig:
    return load_config(EmulatorConfig, environ)
