"""Emulator worker entry point: config, metrics server, signals, run.  (Wiring only.)"""
from __future__ import annotations

import logging
import signal
import sys

from prometheus_client import start_http_server

from tempest_common.config import ConfigError

from .config import load_emulator_config
from .mame_process import RomError
from .worker import EmulatorWorker


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = load_emulator_config()
    except ConfigError as exc:
        print(f"emulator: configuration error: {exc}", file=sys.stderr)
        return 2
    if cfg.metrics_port:
        start_http_server(cfg.metrics_port)
    worker = EmulatorWorker(cfg)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    try:
        worker.run()
    except (RomError, FileNotFoundError) as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
