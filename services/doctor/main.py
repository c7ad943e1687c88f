"""Stability doctor entry point: config, history source, control client, HTTP port, signals,
run.  (Wiring only.)"""
from __future__ import annotations

import sys

from services.learner.control import control_token_path
from tempest_common.config import ConfigError
from tempest_common.service_main import load_or_exit, metrics_addr, stop_on_signals

from .config import load_doctor_config
from .control_link import TokenReadingControl
from .doctor import Doctor
from .history import PrometheusHistory, ScrapeHistory
from .metrics import DoctorMetrics
from .prometheus_api import PrometheusAPI
from .server import serve


def main() -> int:
    cfg = load_or_exit("doctor", load_doctor_config)
    reader = (ScrapeHistory(cfg.scrape_list(), cfg.timeout_s) if cfg.source == "scrape" else
              PrometheusHistory(PrometheusAPI(cfg.prometheus_url, cfg.timeout_s)))
    token_path = control_token_path({"CONTROL_TOKEN_FILE": cfg.control_token_file,
                                     "CHECKPOINT_DIR": cfg.checkpoint_dir})
    control = TokenReadingControl(cfg.control_addr, cfg.timeout_s, token_path)
    doctor = Doctor(cfg, reader, control, DoctorMetrics())
    if cfg.metrics_port:
        try:
            serve(metrics_addr(), cfg.metrics_port, lambda: doctor.report)
        except ConfigError as exc:
            print(f"doctor: configuration error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"doctor: cannot serve on port {cfg.metrics_port}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    stop_on_signals(doctor)
    doctor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
