"""Helpers shared by the benchmarks in bench/ (emulator.py, expert.py, replay.py, learner.py).

Each bench is run as a script (`.venv/bin/python bench/NAME.py`); it puts the repo root first on
sys.path and then imports from here (`from bench.harness import ...`).  Nothing here measures
anything: these are the logging, port, process, /metrics and /proc plumbing the benches share.

  logger(name)            the bench's progress logger (stderr); also what the helpers here log with
  free_port()             a free TCP port on 127.0.0.1
  metrics(port)           a service's Prometheus text from http://127.0.0.1:PORT/metrics as a dict
  wait_for(pred, ...)     poll until pred() is truthy (errors while a service comes up are retried)
  stop_proc(p, name)      SIGCONT + SIGTERM, then SIGKILL after a timeout
  rompath(bench)          the folder that holds tempest1/ (TEMPEST_ROMPATH or ../shared/roms)
  clean_env(**extra)      os.environ without the services' own settings, plus extra
  start_redis(workdir)    a private redis-server (no persistence) and a client for it
  start_replay(...)       the real replay service process against that Redis
  minor_faults(pid), cpu_seconds(pid), busy_cpu_seconds(), CpuWatch   /proc readers

The realistic TransitionBatch streams that replay.py and learner.py feed the replay with are in
bench/streams.py.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent


# -- logging -------------------------------------------------------------------------------------
def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


_log: Callable[[str], None] = _stderr


def logger(name: str | None = None) -> Callable[[str], None]:
    """The bench's progress logger, writing one line per message to stderr.

    With a name: `[bench/NAME HH:MM:SS] msg` (wall clock).  Without: `[  12.3s] msg`, the seconds
    since this call (call it at import time so the clock starts with the bench).  The logger
    returned also becomes the one the helpers in this module log with."""
    global _log
    if name is not None:
        def log(msg: str) -> None:
            _stderr(f"[bench/{name} {time.strftime('%H:%M:%S')}] {msg}")
    else:
        t0 = time.monotonic()

        def log(msg: str) -> None:
            _stderr(f"[{time.monotonic() - t0:6.1f}s] {msg}")
    _log = log
    return log


# -- ports, /metrics, polling --------------------------------------------------------------------
def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(port: int, timeout: float = 10.0) -> dict[str, float]:
    """The samples of http://127.0.0.1:PORT/metrics (Prometheus text format) as {name: value};
    the name keeps its labels (`name{label="x"}`).  Raises OSError while the server is not up."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def wait_for(pred: Callable[[], object], timeout: float, what: str, poll: float = 0.1):
    """Call pred() every `poll` seconds until it returns something truthy, and return that.  An
    OSError or ValueError from pred() counts as "not yet" (a service still coming up); anything
    else propagates.  TimeoutError after `timeout` seconds, naming `what` and the last error."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except (OSError, ValueError) as exc:   # not up yet
            last = exc
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last})")


# -- processes -----------------------------------------------------------------------------------
def stop_proc(p: subprocess.Popen, name: str, timeout: float = 30.0,
              detail: Callable[[], str] | None = None) -> None:
    """Stop a child: SIGCONT (a stopped process would not act on SIGTERM), SIGTERM, then SIGKILL
    if it has not exited after `timeout` seconds (logged, with detail() appended when given)."""
    if p.poll() is not None:
        return
    try:
        os.kill(p.pid, signal.SIGCONT)
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _log(f"{name} did not stop on SIGTERM in {timeout:.0f} s; killing it"
             + (f". Its log: {detail()}" if detail else ""))
        p.kill()
        p.wait()
    except ProcessLookupError:
        pass


def rompath(bench: str) -> str:
    """The ROM folder: env TEMPEST_ROMPATH, else ../shared/roms next to the repo; exits with a
    message naming `bench` when it holds no tempest1/ (or tempest1.zip)."""
    path = os.environ.get("TEMPEST_ROMPATH") or str((ROOT / ".." / "shared" / "roms").resolve())
    if not ((Path(path) / "tempest1").is_dir() or (Path(path) / "tempest1.zip").is_file()):
        sys.exit(f"bench/{bench}.py: {path} holds no tempest1/ (TEMPEST_ROMPATH is "
                 f"{'set' if os.environ.get('TEMPEST_ROMPATH') else 'not set'}); point TEMPEST_ROMPATH "
                 "at the folder that holds tempest1/")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without any of the learner's and the replay's own settings (so nothing in the
    caller's shell changes the configuration measured), plus `extra`; PYTHONPATH gets the repo
    root first."""
    from services.learner.settings import LearnerConfig, LiveSettings
    from services.replay.config import ReplayConfig
    names = set()
    for cls in (LearnerConfig, LiveSettings, ReplayConfig):
        names |= {f.metadata["setting"]["env"] for f in dataclasses.fields(cls)}
    env = {k: v for k, v in os.environ.items() if k not in names}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def log_tail(path: str, n: int = 2000) -> str:
    """The last n characters of a log file ('' where unreadable)."""
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


# -- redis + the replay service ------------------------------------------------------------------
def start_redis(workdir: str):
    """Start a private redis-server on a free port (no persistence, its log in workdir/redis.log),
    wait until it answers, FLUSHALL it.  Returns (process, redis.Redis client, port).

    Env REDIS_SERVER names the binary (else `redis-server` on PATH, else /usr/bin/redis-server);
    it is started under the name redis-server, so Debian's multi-call redis-check-rdb works too.
    Env REDIS_LD_LIBRARY_PATH is prepended to LD_LIBRARY_PATH for the redis process alone."""
    import redis
    redis_bin = os.environ.get("REDIS_SERVER") or shutil.which("redis-server") or "/usr/bin/redis-server"
    redis_env = dict(os.environ)
    if os.environ.get("REDIS_LD_LIBRARY_PATH"):
        redis_env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (os.environ["REDIS_LD_LIBRARY_PATH"], os.environ.get("LD_LIBRARY_PATH", "")) if p)
    port = free_port()
    log_path = os.path.join(workdir, "redis.log")
    rp = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no", "--dir", workdir, "--daemonize", "no"],
                          executable=redis_bin, env=redis_env,
                          stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    rc = redis.Redis(host="127.0.0.1", port=port)

    def redis_up():
        if rp.poll() is not None:
            raise RuntimeError(f"redis-server ({redis_bin}) exited with {rp.returncode}: " + log_tail(log_path))
        try:
            return rc.ping()
        except redis.ConnectionError:
            return False
    try:
        wait_for(redis_up, 20, "redis-server", poll=0.05)
    except BaseException:
        stop_proc(rp, "redis-server")
        raise
    rc.flushall()
    _log(f"redis-server {rc.info('server')['redis_version']} ({redis_bin}) on port {port}")
    return rp, rc, port


@dataclasses.dataclass
class Replay:
    """A running replay service: its process, sockets, /metrics port and log file."""
    proc: subprocess.Popen
    pull_url: str        # TransitionSender connects here (PUSH -> PULL)
    router_url: str      # ReplayClient / the learner connect here
    metrics_port: int
    log_path: str

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"replay service exited with {self.proc.returncode}: " + log_tail(self.log_path))


def start_replay(workdir: str, redis_port: int, prefix: str, capacity: int, env: Callable[..., dict]) -> Replay:
    """Start `python -m services.replay.main` against redis on redis_port (float16 states of
    STATE_SIZE, min size to sample 1000, unpaced, seed 1), its log in workdir/replay.log, and wait
    until it logs "serving" and answers /metrics.  env(**settings) builds the process environment
    from the settings (e.g. clean_env, or a copy of os.environ)."""
    from tempest_common.state_vector import STATE_SIZE
    pull_url, router_url = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    metrics_port = free_port()
    log_path = os.path.join(workdir, "replay.log")
    proc = subprocess.Popen([sys.executable, "-m", "services.replay.main"], cwd=str(ROOT), env=env(
        REDIS_URL=f"redis://127.0.0.1:{redis_port}/0", REPLAY_REDIS_PREFIX=prefix, REPLAY_PULL_BIND=pull_url,
        REPLAY_BIND=router_url, METRICS_PORT=str(metrics_port), STATE_DIM=str(STATE_SIZE),
        REPLAY_STATE_DTYPE="float16", REPLAY_CAPACITY=str(capacity), MIN_SIZE_TO_SAMPLE="1000",
        SAMPLES_PER_INSERT="0", SEED="1"), stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    replay = Replay(proc, pull_url, router_url, metrics_port, log_path)

    def replay_up():
        replay.check_alive()
        return "serving" in log_tail(log_path, 10**9) and metrics(metrics_port)
    try:
        wait_for(replay_up, 60, "the replay service", poll=0.2)
    except BaseException:
        stop_proc(proc, "replay service")
        raise
    return replay


# -- /proc readers -------------------------------------------------------------------------------
def _proc_stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name (field 3 onwards)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()


def minor_faults(pid: int) -> int:
    """Minor page faults of a process so far (/proc/PID/stat field 10); -1 where unreadable."""
    try:
        return int(_proc_stat(pid)[7])
    except (OSError, ValueError, IndexError):
        return -1


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far (all threads), in seconds; nan where unreadable."""
    try:
        fields = _proc_stat(pid)
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def busy_cpu_seconds() -> float:
    """CPU seconds all processes on the machine have spent busy so far (/proc/stat)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")   # minus idle and iowait
    except (OSError, ValueError, IndexError):
        return float("nan")


class CpuWatch:
    """CPU cores kept busy over a window by each of our processes and by everything else."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self.t0, self.all0 = time.perf_counter(), busy_cpu_seconds()
        self.c0 = {nm: cpu_seconds(pid) for nm, pid in pids.items()}

    def report(self) -> str:
        dt = time.perf_counter() - self.t0
        ours = {nm: (cpu_seconds(pid) - self.c0[nm]) / dt for nm, pid in self.pids.items()}
        other = (busy_cpu_seconds() - self.all0) / dt - sum(ours.values())
        return ", ".join(f"{nm} {v:.2f}" for nm, v in ours.items()) + f", other processes {max(0.0, other):.2f}"
