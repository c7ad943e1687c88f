"""The wiring every service's main.py shares: logging, configuration, metrics server, signals.

    cfg = load_or_exit("replay", load_replay_config)     # a bad setting: one clear line, exit 2
    serve_metrics(cfg.metrics_port)                       # on METRICS_ADDR (default 0.0.0.0)
    stop_on_signals(service)                              # SIGTERM / SIGINT -> service.stop()
"""
from __future__ import annotations

import ipaddress
import logging
import os
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


def metrics_addr(environ=None) -> str:
    """METRICS_ADDR: the address /metrics binds.  Default 0.0.0.0 (containers are scraped by
    Prometheus over the compose network); `make up` sets 127.0.0.1, like its ZeroMQ sockets."""
    addr = (os.environ if environ is None else environ).get("METRICS_ADDR", "0.0.0.0")
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        raise ConfigError(f"METRICS_ADDR={addr!r} is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)") from None
    return addr


def serve_metrics(port: int) -> None:
    """prometheus-client's own HTTP server on `port` (0 = no metrics endpoint) at METRICS_ADDR."""
    if not port:
        return
    try:
        addr = metrics_addr()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    start_http_server(port, addr=addr)


def stop_on_signals(service) -> None:
    """SIGTERM (docker stop, honcho) and SIGINT (Ctrl-C) ask the service to stop cleanly."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: service.stop())
