"""The wiring every service's main.py shares: logging, configuration, metrics server, signals.

    cfg = load_or_exit("replay", load_replay_config)     # a bad setting: one clear line, exit 2
    serve_metrics(cfg.metrics_port)
    stop_on_signals(service)                              # SIGTERM / SIGINT -> service.stop()
"""
from __future__ import annotations

import logging
import signal
import sys
from typing import Callable, TypeVar

from prometheus_client import start_http_server

from .config import ConfigError

T = TypeVar("T")


def load_or_exit(service: str, load: Callable[[], T]) -> T:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return load()
    except ConfigError as exc:
        print(f"{service}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def serve_metrics(port: int) -> None:
    """prometheus-client's own HTTP server on `port` (0 = no metrics endpoint)."""
    if port:
        start_http_server(port)


def stop_on_signals(service) -> None:
    """SIGTERM (docker stop, honcho) and SIGINT (Ctrl-C) ask the service to stop cleanly."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: service.stop())
