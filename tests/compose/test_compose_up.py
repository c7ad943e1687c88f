"""`docker compose up --scale emulator=2` on a running engine (issue 18; make test-compose, not part of
make test).  The project's images are built, the stack comes up, is scaled to two emulator workers,
and is judged through Prometheus (its host port moved to a free one):
  - both emulator targets up, tempest_frames_total growing on each;
  - learner steps and the replay's size growing; every container running and healthy;
then `stop` and `up` again: the replay rebuilt from Redis with at least the size it had, the learner
resumed at the step of its SIGTERM checkpoint; `down -v` at the end, whatever happened.  The last
stderr line is one JSON object with the times (build, up, healthy, scale, restart) and figures."""
from __future__ import annotations

import json
import os
import re
import time

import pytest

from tests.compose.engine import Compose, Prometheus, free_port, log, require_engine, stack_env, wait_for

pytestmark = pytest.mark.compose
GROW_S = 15          # seconds between the two readings that must show growth (3 scrapes)


def grew(prom: Prometheus, selector: str, since: float, what: str, per_instance: int = 1) -> tuple[dict, dict]:
    """Two readings GROW_S apart, every instance's value higher in the second."""
    first = wait_for(f"{what}: {per_instance} fresh series", lambda: (lambda v: v if len(v) >= per_instance else None)(
        prom.latest(selector, since)), 120)
    time.sleep(GROW_S)
    second = prom.latest(selector, time.time() - 10)
    stuck = {i: (first[i], second.get(i)) for i in first if not second.get(i, -1) > first[i]}
    assert not stuck, f"{what} did not grow over {GROW_S} s: {stuck}"
    return first, second


def both_workers_and_the_learner_work(prom: Prometheus, since: float, figures: dict) -> None:
    """tempest_frames_total grows on two emulator instances, and the learner's steps grow."""
    frames = grew(prom, "tempest_frames_total", since, "tempest_frames_total on each emulator", 2)[1]
    figures["frames_per_replica"] = {i: int(v) for i, v in sorted(frames.items())}
    wait_for("the learner training", lambda: prom.latest("tempest_learner_steps_total", since)
             .get("learner:9104", 0) > 0, 300, 3)
    figures["learner_steps"] = int(grew(prom, "tempest_learner_steps_total", since,
                                        "the learner's steps")[1]["learner:9104"])


def test_compose_up_scale_stop_up_down():
    require_engine()
    prom_port = free_port()
    project = f"tempest-test-{os.getpid()}"
    compose = Compose(project, stack_env(PROMETHEUS_PORT=str(prom_port)))
    prom = Prometheus(prom_port)
    figures: dict = {"project": project}
    t0 = time.monotonic()
    try:
        compose("build", timeout=1200)
        figures["build_s"] = round(time.monotonic() - t0, 1)
        log(f"images built in {figures['build_s']} s")

        t = time.monotonic()
        compose("up", "-d", timeout=600)
        wait_for("every container healthy", lambda: not compose.unhealthy(), 300, 3)
        figures["up_healthy_s"] = round(time.monotonic() - t, 1)
        log(f"up and healthy in {figures['up_healthy_s']} s")

        t = time.monotonic()
        compose("up", "-d", "--no-recreate", "--scale", "emulator=2", timeout=600)
        wait_for("Prometheus ready", prom.ready, 60)
        wait_for("two emulator targets up in Prometheus", lambda: len(prom.targets_up("emulator")) == 2, 180, 3)
        figures["scale_s"] = round(time.monotonic() - t, 1)
        started = time.time()
        both_workers_and_the_learner_work(prom, started, figures)
        size = grew(prom, "tempest_replay_size", started, "the replay's size")[1]
        figures["replay_size"] = int(size["replay:9103"])
        assert not compose.unhealthy(), compose.unhealthy()
        log(f"both emulators produce frames {figures['frames_per_replica']}, learner at {figures['learner_steps']} "
            f"steps, replay holds {figures['replay_size']}")

        # stop and up again: what was stored and trained comes back
        before_stop = time.time()
        size_before = prom.latest("tempest_replay_size", before_stop - 15)["replay:9103"]
        step_before = prom.latest("tempest_learner_step", before_stop - 15)["learner:9104"]
        t = time.monotonic()
        compose("stop", timeout=300)
        figures["stop_s"] = round(time.monotonic() - t, 1)
        t = time.monotonic()
        restarted = time.time()
        compose("up", "-d", "--scale", "emulator=2", timeout=600)
        wait_for("every container healthy after the restart", lambda: not compose.unhealthy(), 300, 3)
        figures["restart_healthy_s"] = round(time.monotonic() - t, 1)
        resumed = wait_for("the learner's resume line", lambda: re.findall(
            r"resumed run \S+ from \S+ at step (\d+)", compose.logs("learner")), 120)
        figures.update(step_before_stop=int(step_before), resumed_at_step=int(resumed[-1]))
        assert int(resumed[-1]) >= step_before, (f"the learner resumed at step {resumed[-1]}, before the "
                                                 f"{step_before:.0f} it had reached before the stop")
        size_after = wait_for(f"the replay rebuilt to at least {size_before:.0f}", lambda: (lambda v: v if v and
                              v.get("replay:9103", -1) >= size_before else None)(
            prom.latest("tempest_replay_size", restarted)), 180, 3)["replay:9103"]
        figures.update(replay_size_before_stop=int(size_before), replay_size_after_restart=int(size_after))
        wait_for("two emulator targets up again", lambda: len(prom.targets_up("emulator")) == 2, 180, 3)
        grew(prom, "tempest_learner_steps_total", restarted, "the learner's steps after the restart")
    finally:
        t = time.monotonic()
        down = compose("down", "-v", "--remove-orphans", timeout=300, check=False)
        figures["down_s"] = round(time.monotonic() - t, 1)
        figures["total_s"] = round(time.monotonic() - t0, 1)
        log(json.dumps(figures))
    assert down.returncode == 0, down.stderr[-2000:]
    left = compose("ps", "--all", "-q").stdout.strip()
    assert not left, f"containers left after down -v: {left}"
