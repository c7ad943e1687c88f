"""Emulator worker entry point: config, metrics server, signals, run.  (Wiring only.)"""
from __future__ import annotations

import sys

from tempest_common.service_main import load_or_exit, serve_metrics, stop_on_signals

from .config import load_emulator_config
from .mame_process import RomError
from .worker import EmulatorWorker


def main() -> int:
    cfg = load_or_exit("emulator", load_emulator_config)
    serve_metrics(cfg.metrics_port)
    worker = EmulatorWorker(cfg)
    stop_on_signals(worker)
    try:
        worker.run()
    except (RomError, FileNotFoundError) as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
