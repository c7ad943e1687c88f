"""Replay service entry point: config, metrics server, rebuild from Redis, run.  (Wiring only.)"""
from __future__ import annotations

import ctypes
import sys

import redis

from tempest_common.service_main import load_or_exit, serve_metrics, stop_on_signals

from .config import load_replay_config
from .service import ReplayService


def keep_large_buffers() -> None:
    """Ask glibc to reuse large freed blocks instead of mmapping fresh pages for each one: a
    16384-row sample batch allocates ~45 MB of temporary arrays, and fresh pages cost ~11,000
    page faults per batch (about half the time to serve it, measured by bench/replay.py)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
        libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
        libc.mallopt(M_TOP_PAD, 64 << 20)
    except (OSError, AttributeError):
        pass


def main() -> int:
    keep_large_buffers()
    cfg = load_or_exit("replay", load_replay_config)
    serve_metrics(cfg.metrics_port)
    service = ReplayService(cfg)
    stop_on_signals(service)
    try:
        service.restore()
    except redis.RedisError as exc:
        print(f"replay: cannot reach Redis at REDIS_URL={cfg.redis_url}: {exc}", file=sys.stderr)
        return 3
    service.bind()
    service.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
