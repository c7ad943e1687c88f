"""Single-node Docker Swarm (issue 18; make test-compose): `docker swarm init`, the node labelled as
the learner's (gpu=true), the stack file generated from docker-compose.yml by tools/stack_file.py,
`docker stack deploy` with EMULATORS=2 on the images `docker compose build` made; both replicas
produce frames and the learner trains (through Prometheus on its published port); then `docker
stack rm`, its volumes removed and `docker swarm leave --force`.  A machine already in a swarm is
left alone (the test fails and says so)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.compose.engine import REPO, Compose, Prometheus, free_port, log, require_engine, run, stack_env, wait_for
from tests.compose.test_compose_up import both_workers_and_the_learner_work

pytestmark = pytest.mark.compose


def swarm_state(env) -> str:
    return run(["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"], env).stdout.strip()


def init_swarm(env) -> None:
    if swarm_state(env) != "inactive":
        pytest.fail(f"this engine is already in a swarm ({swarm_state(env)}): the test does not touch it")
    first = run(["docker", "swarm", "init"], env, check=False)
    if first.returncode != 0:   # several addresses: advertise the one the default route uses
        addr = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()[0]
        run(["docker", "swarm", "init", "--advertise-addr", addr], env)


def test_single_node_swarm_deploys_the_generated_stack_and_trains():
    require_engine()
    prom_port = free_port()
    stack = f"tempest-swarm-{os.getpid()}"
    env = stack_env(PROMETHEUS_PORT=str(prom_port), EMULATORS="2")
    compose = Compose(stack, env)
    figures: dict = {"stack": stack}
    t0 = time.monotonic()
    compose("build", timeout=1200)    # the images the stack runs (cached after test_compose_up)
    figures["build_s"] = round(time.monotonic() - t0, 1)
    config = compose("config", "--format", "json").stdout
    generated = subprocess.run([sys.executable, "-m", "tools.stack_file"], input=config, capture_output=True,
                               text=True, cwd=REPO, check=True).stdout
    stack_file = REPO / "run" / f"{stack}.yml"
    stack_file.parent.mkdir(exist_ok=True)
    stack_file.write_text(generated)
    init_swarm(env)
    prom = Prometheus(prom_port)
    try:
        node = run(["docker", "info", "--format", "{{.Swarm.NodeID}}"], env).stdout.strip()
        run(["docker", "node", "update", "--label-add", "gpu=true", node], env)
        t = time.monotonic()
        deploy = run(["docker", "stack", "deploy", "--resolve-image", "never", "-c", str(stack_file), stack], env,
                     timeout=300)
        log(f"deployed: {deploy.stdout.strip().splitlines()[-1] if deploy.stdout.strip() else ''} "
            f"{deploy.stderr.strip()[-500:]}")
        replicas = wait_for("every service at its replica count", lambda: all_running(env, stack), 300, 3)
        figures["deploy_running_s"] = round(time.monotonic() - t, 1)
        figures["replicas"] = replicas
        wait_for("Prometheus ready on the published port", prom.ready, 120, 3)
        wait_for("two emulator targets up", lambda: len(prom.targets_up("emulator")) == 2, 240, 3)
        figures["both_emulators_up_s"] = round(time.monotonic() - t, 1)
        both_workers_and_the_learner_work(prom, time.time(), figures)
    finally:
        run(["docker", "stack", "rm", stack], env, check=False)
        wait_for_gone(env, stack)
        volumes = run(["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={stack}"],
                      env, check=False).stdout.split()
        if volumes:
            run(["docker", "volume", "rm", *volumes], env, check=False)
        left = run(["docker", "swarm", "leave", "--force"], env, check=False)
        figures["total_s"] = round(time.monotonic() - t0, 1)
        log(json.dumps(figures))
        stack_file.unlink(missing_ok=True)
    assert left.returncode == 0, left.stderr
    assert swarm_state(env) == "inactive"


def all_running(env, stack: str) -> dict | None:
    """{service: "running/desired"} once every service of the stack runs its desired replicas."""
    out = run(["docker", "stack", "services", stack, "--format", "{{json .}}"], env).stdout
    services = [json.loads(line) for line in out.splitlines() if line.strip()]
    if not services:
        return None
    counts = {s["Name"].removeprefix(f"{stack}_"): s["Replicas"] for s in services}
    done = all(a == b for a, b in (c.split(" ")[0].split("/") for c in counts.values()))
    return counts if done else None


def wait_for_gone(env, stack: str) -> None:
    """Until the stack's containers and network are gone (volumes are removable only then)."""
    def gone() -> bool:
        ps = run(["docker", "ps", "-aq", "--filter", f"label=com.docker.stack.namespace={stack}"], env, check=False)
        nets = run(["docker", "network", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={stack}"],
                   env, check=False)
        return not ps.stdout.strip() and not nets.stdout.strip()
    try:
        wait_for(f"the stack {stack} removed", gone, 120, 2)
    except AssertionError as exc:
        log(str(exc))
