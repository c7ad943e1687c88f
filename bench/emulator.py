"""Benchmark: raw MAME vs the full emulator worker, and two workers at once.

Run as `.venv/bin/python bench/emulator.py` (no arguments).  Progress goes to stderr; the last
stdout line is one JSON object:
  raw_video_fps        median video fps of raw MAME (bench/raw_play.lua, no socket) in play
  worker_video_fps     median video fps of the real worker (services.emulator.main) in play
  ratio                median of per-pair ratios worker/raw (pairs alternate raw, worker, ...)
  worker_frames_per_s  median decided game ticks/s of the worker in play
  pairs                number of raw/worker pairs measured
  two_workers_speedup  total video fps of two workers at once / median single-worker video fps
Every figure is measured in this run; nothing is configured.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import free_port, logger, metrics, rompath, stop_proc  # noqa: E402
from services.emulator.mame_process import MameProcess, _die_with_parent, _headless_env  # noqa: E402

PAIRS = 5
MIN_PAIRS = 3
PAIRS_BUDGET_S = 360.0       # past this, stop adding pairs beyond MIN_PAIRS (10-minute limit)
WINDOW_FRAMES = 12000         # video frames measured per run (after play started)
START_TIMEOUT_S = 60.0        # to reach play
RUN_TIMEOUT_S = 180.0         # to cover the window once in play
POLL_S = 0.1                  # /metrics poll period; readings are taken when the counter just moved
RAW_LUA = ROOT / "bench" / "raw_play.lua"
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable

T0 = time.monotonic()
log = logger()


# ---------------------------------------------------------------- raw MAME

def measure_raw(roms: str, tmp: Path) -> float:
    mp = MameProcess(roms, port=0, lua_script=RAW_LUA, workdir=tempfile.mkdtemp(dir=tmp, prefix="raw-"))
    for sub in ("cfg", "nvram", "sta", "ini", "snap", "inp", "diff"):
        (mp.workdir / sub).mkdir(parents=True, exist_ok=True)
    env = _headless_env()
    env.update(TEMPEST_BRIDGE_PORT="0", TEMPEST_BRIDGE_TIMEOUT_S="10")
    proc = subprocess.Popen(mp.command(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, env=env, preexec_fn=_die_with_parent)
    first = None
    tail: list[str] = []
    try:
        started = time.monotonic()
        assert proc.stdout is not None
        for raw in proc.stdout:
            now = time.monotonic()
            line = raw.decode(errors="replace").strip()
            tail = (tail + [line])[-5:]
            parts = line.split()
            if len(parts) != 3 or parts[0] != "tempest-raw":
                if now - started > START_TIMEOUT_S + RUN_TIMEOUT_S:
                    break
                continue
            frame = int(parts[1])
            if first is None:
                first = (now, frame)
                continue
            if frame - first[1] >= WINDOW_FRAMES:
                fps = (frame - first[1]) / (now - first[0])
                log(f"raw: {frame - first[1]} video frames in {now - first[0]:.2f}s = {fps:.0f} fps")
                return fps
        raise RuntimeError(f"raw MAME ended or stalled before the window was covered; last output: {tail}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


# ---------------------------------------------------------------- worker

class Worker:
    def __init__(self, roms: str, tmp: Path, seed: int):
        self.port = free_port()
        self.log_path = tmp / f"worker-{seed}-{self.port}.log"
        env = dict(os.environ)
        env.update(TEMPEST_ROMPATH=roms, METRICS_PORT=str(self.port), REPLAY_ADDR="",
                   LEARNER_EPISODES_ADDR="", EXPERT_ADDR="", EXPERT_RATIO="0", SEED=str(seed),
                   HEARTBEAT_S="0.5")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([PY, "-m", "services.emulator.main"], cwd=str(ROOT), env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def read(self) -> tuple[float, float, float] | None:
        """(time, video frames, game ticks) or None if /metrics is not up yet."""
        try:
            m = metrics(self.port, timeout=2)
        except OSError:
            return None
        now = time.monotonic()
        if "tempest_emulator_video_frames_total" not in m or "tempest_frames_total" not in m:
            return None
        return now, m["tempest_emulator_video_frames_total"], m["tempest_frames_total"]

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {self.proc.returncode}: {self.log_tail()}")

    def log_tail(self, n: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-n:])
        except OSError:
            return ""

    def wait_in_play(self) -> tuple[float, float, float]:
        """First reading once tempest_frames_total > 0, taken just after the video counter moved.

        The worker updates its counters once per heartbeat, so a reading is only exact right after
        an update: polling every POLL_S and keeping the first changed value bounds the error to
        POLL_S instead of a whole heartbeat."""
        deadline = time.monotonic() + START_TIMEOUT_S
        prev = None
        while time.monotonic() < deadline:
            self.check_alive()
            r = self.read()
            if r is not None and r[2] > 0:
                if prev is not None and r[1] != prev[1]:
                    return r
                prev = r
            time.sleep(POLL_S)
        raise RuntimeError(f"worker did not reach play in {START_TIMEOUT_S}s: {self.log_tail()}")

    def stop(self) -> None:
        stop_proc(self.proc, f"worker {self.proc.pid}", timeout=15, detail=lambda: self.log_tail(8))
        self._log.close()


def wait_window(workers: list[Worker], marks: list[tuple[float, float, float]]) -> list[tuple[float, float, float]]:
    """Poll until every worker's video frames advanced >= WINDOW_FRAMES past its mark.

    Each worker's end reading is the first poll that crossed the window, i.e. just after a counter
    update (see Worker.wait_in_play)."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    ends: list[tuple[float, float, float] | None] = [None] * len(workers)
    while time.monotonic() < deadline:
        time.sleep(POLL_S)
        for i, (w, m) in enumerate(zip(workers, marks)):
            if ends[i] is not None:
                continue
            w.check_alive()
            r = w.read()
            if r is not None and r[1] - m[1] >= WINDOW_FRAMES:
                ends[i] = r
        if all(e is not None for e in ends):
            return ends  # type: ignore[return-value]
    raise RuntimeError(f"workers did not cover {WINDOW_FRAMES} video frames in {RUN_TIMEOUT_S}s")


def measure_worker(roms: str, tmp: Path, seed: int) -> tuple[float, float]:
    w = Worker(roms, tmp, seed)
    try:
        a = w.wait_in_play()
        b = wait_window([w], [a])[0]
        dt = b[0] - a[0]
        vfps, tps = (b[1] - a[1]) / dt, (b[2] - a[2]) / dt
        log(f"worker: {b[1] - a[1]:.0f} video frames, {b[2] - a[2]:.0f} ticks in {dt:.2f}s = "
            f"{vfps:.0f} video fps, {tps:.1f} ticks/s")
        return vfps, tps
    finally:
        w.stop()


def measure_two_workers(roms: str, tmp: Path) -> float:
    ws = [Worker(roms, tmp, 1001), Worker(roms, tmp, 1002)]
    try:
        for w in ws:
            w.wait_in_play()
        # Both in play: take fresh edge-aligned marks so the windows overlap almost entirely.
        marks = [w.wait_in_play() for w in ws]
        ends = wait_window(ws, marks)
        fps = [(e[1] - m[1]) / (e[0] - m[0]) for e, m in zip(ends, marks)]
        log(f"two workers: {fps[0]:.0f} + {fps[1]:.0f} = {sum(fps):.0f} video fps")
        return sum(fps)
    finally:
        for w in ws:
            if w.proc.poll() is None:
                w.proc.terminate()
        for w in ws:
            w.stop()


def main() -> int:
    roms = rompath("emulator")
    log(f"ROMs: {roms}; up to {PAIRS} pairs of raw/worker, window {WINDOW_FRAMES} video frames in play")
    raw_fps: list[float] = []
    worker_fps: list[float] = []
    worker_tps: list[float] = []
    ratios: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-emulator-") as d:
        tmp = Path(d)
        for i in range(PAIRS):
            if i >= MIN_PAIRS and time.monotonic() - T0 > PAIRS_BUDGET_S:
                log(f"time budget: stopping after {i} pairs")
                break
            log(f"pair {i + 1}/{PAIRS}: raw MAME")
            r = measure_raw(roms, tmp)
            log(f"pair {i + 1}/{PAIRS}: worker")
            v, t = measure_worker(roms, tmp, seed=100 + i)
            raw_fps.append(r)
            worker_fps.append(v)
            worker_tps.append(t)
            ratios.append(v / r)
            log(f"pair {i + 1}/{PAIRS}: ratio {v / r:.3f}")
        log("two workers at once")
        both = measure_two_workers(roms, tmp)
    single = statistics.median(worker_fps)
    result = {
        "raw_video_fps": round(statistics.median(raw_fps), 1),
        "worker_video_fps": round(single, 1),
        "ratio": round(statistics.median(ratios), 3),
        "worker_frames_per_s": round(statistics.median(worker_tps), 1),
        "pairs": len(ratios),
        "two_workers_speedup": round(both / single, 3),
    }
    log(f"raw fps {[round(x) for x in raw_fps]}, worker fps {[round(x) for x in worker_fps]}, "
        f"ratios {[round(x, 3) for x in ratios]}; total {time.monotonic() - T0:.0f}s")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
