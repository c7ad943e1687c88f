"""Helpers of the Docker tests (make test-compose): the compose CLI on a running engine, and
Prometheus' HTTP API on its published host port.  Nothing here is mocked: every call is the real
`docker` binary or a real HTTP request.

  TEMPEST_COMPOSE_FILES   extra compose files after docker-compose.yml, ':'-separated (on machines
                          without an image registry, ../shared/docker-here/compose.here.yml)
  TORCH_INDEX_URL         passed through to the image builds (docker-compose.yml's build args)
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def log(msg: str) -> None:
    print(f"[compose-test {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def require_engine() -> None:
    if not shutil.which("docker"):
        pytest.fail("no docker CLI: install Docker (on this project's CI machines: "
                    "../shared/docker-here/start-engine.sh), then run make test-compose")
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if info.returncode != 0:
        pytest.fail(f"no Docker engine answers: {info.stderr.strip()[:300]}")
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
        pytest.fail("no Compose v2 plugin (`docker compose`)")


def compose_files() -> list[str]:
    extra = [f for f in os.environ.get("TEMPEST_COMPOSE_FILES", "").split(":") if f]
    for f in extra:
        if not Path(f).is_file():
            pytest.fail(f"TEMPEST_COMPOSE_FILES names {f}, which does not exist")
    return [str(REPO / "docker-compose.yml"), *extra]


def run(args: list[str], env: dict, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


class Compose:
    """`docker compose -p PROJECT -f ... ARGS` with the test's environment."""

    def __init__(self, project: str, env: dict):
        self.project, self.env = project, env
        self.base = ["docker", "compose", "-p", project] + [a for f in compose_files() for a in ("-f", f)]

    def __call__(self, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
        return run(self.base + list(args), self.env, timeout, check)

    def containers(self) -> list[dict]:
        """`docker compose ps --all --format json`: one dict per container (Service, State, Health, ...)."""
        out = self("ps", "--all", "--format", "json").stdout.strip()
        if not out:
            return []
        if out.startswith("["):
            return json.loads(out)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def unhealthy(self) -> list[str]:
        """Containers not running, or with a healthcheck that does not say healthy."""
        return [f"{c['Name']}: {c['State']} {c.get('Health', '')}".strip() for c in self.containers()
                if c["State"] != "running" or c.get("Health", "healthy") != "healthy"]

    def logs(self, service: str) -> str:
        return self("logs", "--no-color", service, check=False).stdout


class Prometheus:
    """Prometheus' HTTP API on 127.0.0.1:port (the stack's published port)."""

    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}/api/v1"

    def _get(self, path: str, **params) -> dict:
        url = f"{self.base}/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.load(resp)
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus {path} {params}: {body}")
        return body["data"]

    def ready(self) -> bool:
        try:
            return bool(self._get("query", query="up"))
        except OSError:
            return False

    def targets_up(self, job: str) -> list[str]:
        active = self._get("targets", state="active")["activeTargets"]
        return sorted(t["labels"]["instance"] for t in active if t["labels"]["job"] == job and t["health"] == "up")

    def latest(self, selector: str, since: float, window_s: int = 30) -> dict[str, float]:
        """{instance: newest value} of the series matching `selector` scraped after unix time
        `since` (a range query: stale samples from before a restart never count)."""
        data = self._get("query", query=f"{selector}[{window_s}s]")
        out = {}
        for series in data["result"]:
            fresh = [(float(t), float(v)) for t, v in series["values"] if float(t) > since]
            if fresh:
                out[series["metric"].get("instance", "")] = fresh[-1][1]
        return out


def wait_for(what: str, predicate, timeout_s: float, interval_s: float = 2.0):
    deadline = time.monotonic() + timeout_s
    last_error = None
    while time.monotonic() < deadline:
        try:
            got = predicate()
            if got:
                return got
        except (OSError, AssertionError, KeyError, ValueError) as exc:
            last_error = exc
        time.sleep(interval_s)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s" + (f" (last error: {last_error})" if last_error else ""))


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stack_env(**extra: str) -> dict:
    """The environment of a test stack: the ROM folder, a Grafana password (required by the file,
    Grafana itself is left out where no image exists), small replay thresholds so the learner
    trains within a minute."""
    rom = os.environ.get("TEMPEST_ROMPATH", str(REPO.parent / "shared" / "roms"))
    if not (Path(rom) / "tempest1").is_dir():
        pytest.fail(f"TEMPEST_ROMPATH={rom} holds no tempest1/ (the ROM the emulators mount)")
    return dict(os.environ, TEMPEST_ROMPATH=rom, GRAFANA_ADMIN_PASSWORD=os.environ.get("GRAFANA_ADMIN_PASSWORD",
                "compose-test"), MIN_SIZE_TO_SAMPLE="1000", **extra)
