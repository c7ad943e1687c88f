"""Replay service entry point: config, metrics server, rebuild from Redis, run.  (Wiring only.)"""
from __future__ import annotations

import logging
import signal
import sys

import redis
from prometheus_client import start_http_server

from tempest_common.config import ConfigError

from .config import load_replay_config
from .service import ReplayService


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = load_replay_config()
    except ConfigError as exc:
        print(f"replay: configuration error: {exc}", file=sys.stderr)
        return 2
    if cfg.metrics_port:
        start_http_server(cfg.metrics_port)
    service = ReplayService(cfg)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: service.stop())
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
