"""Learner entry point: config, resume from the latest checkpoint, metrics, signals, run.  (Wiring only.)"""
from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys

from prometheus_client import start_http_server

from tempest_common.config import ConfigError

from . import checkpoint
from .learner import Learner
from .settings import LiveSettings, load_learner_config, load_live_settings

log = logging.getLogger("learner.main")


def env_overrides() -> dict:
    """Live settings given explicitly in the environment win over a resumed checkpoint's."""
    out = {}
    for f in dataclasses.fields(LiveSettings):
        env = f.metadata["setting"]["env"]
        if os.environ.get(env, "").strip():
            out[f.name] = os.environ[env]
    return out


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg, live = load_learner_config(), load_live_settings()
        cfg.hidden_sizes()
        learner = Learner(cfg, live)
        path = checkpoint.latest(cfg.checkpoint_dir) if cfg.resume else None
        if path is not None:
            overrides = env_overrides()
            learner.restore(checkpoint.load(path, str(learner.device)), overrides)
            log.info("resumed run %s from %s at step %d (env overrides: %s)", learner.run_id, path,
                     learner.steps, ", ".join(sorted(overrides)) or "none")
    except ConfigError as exc:
        print(f"learner: configuration error: {exc}", file=sys.stderr)
        return 2
    if cfg.metrics_port:
        start_http_server(cfg.metrics_port)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: learner.stop())
    learner.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
