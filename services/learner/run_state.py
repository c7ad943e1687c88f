"""The learner's state on disk and back: what a checkpoint holds, writing one with its health
verdict, marks, resuming, and the rollback to a healthy checkpoint (issue 16).

Functions of the Learner (learner.py keeps its sockets and its loop; this is the rest of its
life on disk).  Each rolling checkpoint carries the verdict health.judge() gives on the optimizer
steps since the previous one (`learner.since_checkpoint`, reset at each); `learner.health` is the
verdict of the network the learner holds now (a resumed or rolled-back network: its checkpoint's).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from tempest_common.actions import NUM_ACTIONS

from . import checkpoint
from .health import Verdict, judge
from .settings import LiveSettings, apply_changes

log = logging.getLogger("learner")


def checkpoint_dict(learner, health: Verdict | None = None) -> dict:
    """Everything a run carries on from; `health`: the verdict it is saved with (None: none)."""
    out = {"run_id": learner.run_id, "run_started": learner.run_started, "config": dataclasses.asdict(learner.cfg),
           "live": learner.settings_dict(), "online": learner.online.state_dict(),
           "target": learner.target.state_dict(),
           "optimizer": learner.optimizer.state_dict(), "bookkeeper": learner.books.state_dict(),
           "counters": {"steps": learner.steps, "samples": learner.samples, "target_age": learner.target_age,
                        "weights_version": learner.weights_version, "last_mark": learner.last_mark},
           "probe": learner.probe.state_dict()}   # the fixed probe states (probe.py)
    if health is not None:
        out["health"] = {"healthy": health.healthy, "reasons": list(health.reasons), "wall_time": time.time(),
                         "step": learner.steps, "global_frames": learner.books.global_frames}
    return out


def current_verdict(learner) -> Verdict:
    """The health of the network the learner holds, from the steps since the last checkpoint; Q is
    judged against the bound the workers' reward settings imply (Learner.q_bound(); None until a
    worker has said them: then Q need only be finite)."""
    return judge(learner.since_checkpoint, learner.live.max_grad_norm, learner.q_bound(), learner.health)


def save_checkpoint(learner) -> Path:
    verdict = current_verdict(learner)
    path = checkpoint.save(learner.cfg.checkpoint_dir, checkpoint_dict(learner, verdict), learner.steps)
    learner.health = verdict
    learner.since_checkpoint.reset()
    learner.metrics.checkpoints.inc()
    learner.metrics.checkpoint_healthy.set(1.0 if verdict.healthy else 0.0)
    if verdict.healthy:
        learner.metrics.last_healthy_checkpoint_step.set(learner.steps)
    learner._last_checkpoint = time.monotonic()
    log.info("checkpoint %s (step %d, %d global frames): %s", path, learner.steps, learner.books.global_frames,
             "healthy" if verdict.healthy else "not healthy: " + "; ".join(verdict.reasons))
    return path


def save_mark(learner, mark: int) -> Path:
    learner.last_mark = mark  # before the state is taken: a run resumed from it never writes this mark again
    # judged, not reset: the next rolling checkpoint still answers for every step since the last one
    path = checkpoint.save_mark(learner.cfg.checkpoint_dir, checkpoint_dict(learner, current_verdict(learner)), mark)
    learner.metrics.checkpoints.inc()
    log.info("checkpoint mark %s (step %d, %d global frames)", path, learner.steps, learner.books.global_frames)
    return path


def restore(learner, saved: dict, env_overrides: dict | None = None) -> None:
    """Carry on from `saved` (a checkpoint_dict()); `env_overrides` win over its live settings."""
    learner.run_id = saved["run_id"]
    learner.run_started = float(saved.get("run_started", learner.started))   # older checkpoints lack it
    _load_networks(learner, saved)
    learner.books.load_state_dict(saved["bookkeeper"])
    learner.probe.load_state_dict(saved.get("probe"), learner.cfg.state_dim)   # older checkpoints: none
    c = saved["counters"]
    learner.steps, learner.samples = int(c["steps"]), int(c["samples"])
    learner.target_age, learner.weights_version = int(c["target_age"]), int(c["weights_version"])
    learner.metrics.step.set(learner.steps)
    # a checkpoint from before marks: the marks its run passed are not written after the fact
    passed = checkpoint.mark_due(learner.books.global_frames, learner.cfg.checkpoint_every_frames, 0) or 0
    learner.last_mark = int(c.get("last_mark", passed))
    learner.live = apply_changes(LiveSettings(), {**saved["live"], **(env_overrides or {})})
    learner.metrics.export_settings(learner.live)


def _load_networks(learner, saved: dict) -> None:
    learner.online.load_state_dict(saved["online"])
    learner.target.load_state_dict(saved["target"])
    learner.optimizer.load_state_dict(saved["optimizer"])
    learner.health = Verdict.of_checkpoint(saved)
    learner.since_checkpoint.reset()


def network_shape(learner) -> checkpoint.Shape:
    cfg = learner.cfg
    return cfg.state_dim, cfg.hidden_sizes(), NUM_ACTIONS, cfg.layer_norm


def rollback(learner, step: int | None = None) -> dict:
    """Put back the online and target networks and the optimizer of this run's newest healthy
    checkpoint (or of the one at `step`, healthy or not).  Counters go on (steps, samples, the
    weights version: workers take the next weights as new) and so do the books and the live
    settings (the operator's cure stays in force).  The weights are published at once, and the
    replay is told to forget its maximum priority: new rows would otherwise enter at a priority
    the divergence ratcheted up.  checkpoint.NoRollbackPoint when there is nothing to go back to.
    Returns what the control reply says: from_step, to_step, checkpoint, healthy, weights_version."""
    path, saved = checkpoint.rollback_point(learner.cfg.checkpoint_dir, learner.run_id, step, str(learner.device),
                                            network_shape(learner))
    to_step = int(saved["counters"]["steps"])
    _load_networks(learner, saved)
    learner.publish()
    learner.replay.send_max_priority_reset(await_ack=False)   # fire and forget: the loop never waits on it
    learner.metrics.rollbacks.inc()
    log.warning("rollback: step %d -> the checkpoint of step %d (%s, %s), weights version %d", learner.steps,
                to_step, path.name, "healthy" if learner.health.healthy else "not healthy", learner.weights_version)
    return {"from_step": learner.steps, "to_step": to_step, "checkpoint": path.name,
            "healthy": learner.health.healthy, "weights_version": learner.weights_version}
