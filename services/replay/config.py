"""ReplayConfig: settings of the replay service, from environment variables."""
from __future__ import annotations

from dataclasses import dataclass

from tempest_common.config import load_config, setting
from tempest_common.state_vector import STATE_SIZE


@dataclass(frozen=True)
class ReplayConfig:
    redis_url: str = setting("REDIS_URL", "redis://127.0.0.1:6379/0", help="Redis holding the durable copy")
    redis_prefix: str = setting("REPLAY_REDIS_PREFIX", "tempest:replay", help="key prefix in Redis")
    pull_bind: str = setting("REPLAY_PULL_BIND", "tcp://*:5555", help="PULL address for transition batches")
    router_bind: str = setting("REPLAY_BIND", "tcp://*:5560", help="ROUTER address for sample / priority requests")
    metrics_port: int = setting("METRICS_PORT", 9103, min=0, max=65535, help="Prometheus /metrics port (0 = off)")
    capacity: int = setting("REPLAY_CAPACITY", 1_000_000, min=1_000, max=100_000_000, help="transitions kept (ring)")
    state_dim: int = setting("STATE_DIM", STATE_SIZE, min=1, max=100_000, help="state vector length")
    state_dtype: str = setting("REPLAY_STATE_DTYPE", "float16", choices=("float16", "float32"),
                               help="dtype of stored and served states")
    alpha: float = setting("PER_ALPHA", 0.6, min=0.0, max=1.0, help="prioritization exponent")
    new_priority_cap: float = setting(
        "PER_NEW_PRIORITY_CAP", 0.0, min=0.0, max=1e6,
        help="new rows' priority: min(max seen, this x mean of all priority updates) (0 = off: max seen)")
    min_size_to_sample: int = setting("MIN_SIZE_TO_SAMPLE", 10_000, min=1, max=100_000_000,
                                      help="no samples until the replay holds this many transitions")
    samples_per_insert: float = setting("SAMPLES_PER_INSERT", 0.0, min=0.0, max=1e6,
                                        help="cap on samples served per transition inserted (0 = no cap)")
    redis_buffer_chunks: int = setting("REDIS_BUFFER_CHUNKS", 10_000, min=1, max=10_000_000,
                                       help="chunks buffered while Redis is unreachable; beyond that they are lost and counted")
    priority_snapshot_s: float = setting("PRIORITY_SNAPSHOT_S", 60.0, min=0.0, max=86_400.0,
                                         help="seconds between priority snapshots to Redis (0 = only at stop)")
    reply_bytes_budget: int = setting(
        "REPLY_BYTES_BUDGET", 512 << 20, min=1 << 20, max=1 << 40,
        help="bytes of sample replies ZeroMQ may hold unsent (peers not reading them); beyond: refused, busy")
    seed: int = setting("SEED", -1, min=-1, max=2**31 - 1, help="sampling RNG seed (-1: random)")


def load_replay_config(environ=None) -> ReplayConfig:
    return load_config(ReplayConfig, environ)
