"""Shared test helpers: the ROM/MAME gate for game tests, free ports, metrics scraping."""
from __future__ import annotations

import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def _rompath() -> str:
    explicit = os.environ.get("TEMPEST_ROMPATH")
    if explicit:
        return explicit
    shared = REPO.parent / "shared" / "roms"
    return str(shared) if shared.is_dir() else ""


@pytest.fixture(scope="session")
def rompath() -> str:
    """ROM folder for game tests; skips with the reason when MAME or the ROM is absent."""
    mame = "/usr/games/mame" if os.path.exists("/usr/games/mame") else shutil.which("mame")
    if not mame:
        pytest.skip("game test: MAME is not installed (Debian package 'mame'; `make setup` installs it)")
    path = _rompath()
    if not path or not (Path(path) / "tempest1").is_dir():
        pytest.skip("game test: no tempest1 ROM (set TEMPEST_ROMPATH to the folder holding tempest1/)")
    return path


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free TCP port on 127.0.0.1, below Linux's ephemeral range (32768-60999) and never handed
    out twice in one session: a port the OS picks from the ephemeral range can be taken by any
    outgoing connection between this check and the service's bind (seen once: "Address already
    in use")."""
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(20000, 32000)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port in 20000-32000")


def scrape(port: int) -> dict[str, float]:
    """Prometheus text from 127.0.0.1:port/metrics -> {'name{labels}': value}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the service may not be up yet
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_exc})")


def start_service(module: str, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    full_env = dict(os.environ)
    full_env.update(env)
    full_env["PYTHONPATH"] = str(REPO)
    log = open(log_path, "wb")
    return subprocess.Popen([PYTHON, "-m", module], cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT)


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture()
def redis_server(tmp_path):
    """A real redis-server on a free port, private to the test; yields its URL."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(binary):
        pytest.fail("redis-server is not installed: `make setup` installs Debian's redis-server")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    import redis
    client = redis.Redis(port=port)
    wait_for(lambda: client.ping(), 10, what="redis-server")
    yield f"redis://127.0.0.1:{port}/0"
    proc.kill()
    proc.wait(5)
