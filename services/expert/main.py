"""Expert service entry point: config, metrics server, signals, run.  (Wiring only.)"""
from __future__ import annotations

import sys

from tempest_common.service_main import load_or_exit, serve_metrics, stop_on_signals

from .config import load_expert_config
from .service import ExpertService


def main() -> int:
    cfg = load_or_exit("expert", load_expert_config)
    serve_metrics(cfg.metrics_port)
    service = ExpertService(cfg)
    stop_on_signals(service)
    service.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
