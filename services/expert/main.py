"""Expert service entry point: config, metrics server, signals, run.  (Wiring only.)"""
from __future__ import annotations

import logging
import signal
import sys

from prometheus_client import start_http_server

from tempest_common.config import ConfigError

from .config import load_expert_config
from .service import ExpertService


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = load_expert_config()
    except ConfigError as exc:
        print(f"expert: configuration error: {exc}", file=sys.stderr)
        return 2
    if cfg.metrics_port:
        start_http_server(cfg.metrics_port)
    service = ExpertService(cfg)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: service.stop())
    service.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
