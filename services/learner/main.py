"""Learner entry point: config, resume from the latest checkpoint, metrics, signals, run.  (Wiring only.)

A configuration error (a token file that cannot be written among them) stops it with one line on
stderr and exit status 2; so does RESUME=1 over checkpoints none of which can be resumed, or whose
newest readable one has a network of another shape (checkpoint.resume_point: a damaged newest one
is passed over, with a warning, for the one before)."""
from __future__ import annotations

import dataclasses
import logging
import os
import sys

from tempest_common.actions import NUM_ACTIONS
from tempest_common.config import ConfigError
from tempest_common.service_main import load_or_exit, serve_metrics, stop_on_signals

from . import checkpoint
from .learner import Learner
from .metrics import LearnerMetrics
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
    cfg, live = load_or_exit("learner", lambda: (load_learner_config(), load_live_settings()))
    try:
        cfg.hidden_sizes()
        learner = Learner(cfg, live, LearnerMetrics(interval_s=cfg.metrics_interval_s))
        shape = (cfg.state_dim, cfg.hidden_sizes(), NUM_ACTIONS, cfg.layer_norm)
        found = checkpoint.resume_point(cfg.checkpoint_dir, str(learner.device), shape) if cfg.resume else None
        if found is not None:
            path, saved = found
            overrides = env_overrides()
            learner.restore(saved, overrides)
            log.info("resumed run %s from %s at step %d (env overrides: %s)", learner.run_id, path,
                     learner.steps, ", ".join(sorted(overrides)) or "none")
    except ConfigError as exc:
        print(f"learner: configuration error: {exc}", file=sys.stderr)
        return 2
    except checkpoint.Unresumable as exc:
        print(f"learner: {exc}", file=sys.stderr)
        return 2
    serve_metrics(cfg.metrics_port)
    stop_on_signals(learner)
    learner.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
