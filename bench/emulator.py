"""Benchmark: raw MAME vs the full emulator worker, and two workers at once.

Run as `.venv/bin/python bench/emulator.py` (no arguments).  Progress goes to stderr; the last
stdout line is one JSON object:
  raw_video_fps        median video fps of raw MAME (bench/raw_play.lua, no socket) in play
  worker_video_fps     median video fps of the real worker (services.emulator.main, uniformly
                       random policy, no peers) in play
  ratio                median of per-round ratios worker / raw
  worker_frames_per_s  median decided game ticks/s of the worker in play
  pairs                number of rounds (each: one raw window, one worker window, one window
                       of two workers at once)
  two_workers_speedup  median of per-round ratios (total video fps of two workers at once) /
                       (video fps of the first worker alone in that round)
Method: raw MAME and two workers (each with its MAME) are started once and brought into play;
from then on only one contender runs at a time and the others are frozen with SIGSTOP (a frozen
process uses no CPU).  Each round runs raw MAME alone, worker A alone and workers A+B together,
for WINDOW_FRAMES video frames each, in an order that rotates between rounds.  Short, adjacent,
alternating windows put the raw and worker figures of one round under the same machine load,
which on a shared machine drifts by +-20% within minutes.  Every figure is measured in this
run; nothing is configured.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import free_port, logger, metrics, rompath, stop_proc  # noqa: E402
from services.emulator.mame_process import MameProcess, _die_with_parent, _headless_env  # noqa: E402

ROUNDS = 9
MIN_ROUNDS = 3
ROUNDS_BUDGET_S = 420.0      # past this, stop adding rounds beyond MIN_ROUNDS (10-minute limit)
WINDOW_FRAMES = 5000          # video frames measured per window (all in play or after it began)
START_TIMEOUT_S = 90.0        # to reach play
WINDOW_TIMEOUT_S = 120.0      # to cover one window
POLL_S = 0.02                 # /metrics poll period; readings are taken when the counter just moved
HEARTBEAT_S = 0.1             # the workers' counter update period (their HEARTBEAT_S)
RAW_LUA = ROOT / "bench" / "raw_play.lua"
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable

T0 = time.monotonic()
log = logger()


def children(pid: int) -> list[int]:
    """PIDs whose parent is `pid` (the worker's MAME)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class RawMame:
    """raw_play.lua prints `tempest-raw FRAME TICKS` every 50 video frames once in play; a reader
    thread timestamps each line as it arrives."""

    def __init__(self, roms: str, tmp: Path):
        mp = MameProcess(roms, port=0, lua_script=RAW_LUA, workdir=tempfile.mkdtemp(dir=tmp, prefix="raw-"))
        for sub in ("cfg", "nvram", "sta", "ini", "snap", "inp", "diff"):
            (mp.workdir / sub).mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(mp.command(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL, env=_headless_env(), preexec_fn=_die_with_parent)
        self.lines: queue.Queue[tuple[float, int]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            parts = raw.split()
            if len(parts) == 3 and parts[0] == b"tempest-raw":
                self.lines.put((time.monotonic(), int(parts[1])))

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def next_line(self, timeout: float) -> tuple[float, int]:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"raw MAME printed nothing for {timeout:.0f} s (exit code {self.proc.poll()})")

    def wait_in_play(self) -> None:
        self.next_line(START_TIMEOUT_S)

    def window(self) -> float:
        """Video fps over the next WINDOW_FRAMES frames (the process must be running)."""
        while not self.lines.empty():   # lines from before the freeze
            self.lines.get_nowait()
        a = self.next_line(WINDOW_TIMEOUT_S)
        b = a
        while b[1] - a[1] < WINDOW_FRAMES:
            b = self.next_line(WINDOW_TIMEOUT_S)
        return (b[1] - a[1]) / (b[0] - a[0])

    def stop(self) -> None:
        self.proc.kill()   # headless MAME ignores SIGTERM; raw MAME holds nothing worth saving
        self.proc.wait(timeout=10)


class Worker:
    def __init__(self, roms: str, tmp: Path, seed: int):
        self.port = free_port()
        self.log_path = tmp / f"worker-{seed}-{self.port}.log"
        env = dict(os.environ)
        env.update(TEMPEST_ROMPATH=roms, METRICS_PORT=str(self.port), REPLAY_ADDR="",
                   LEARNER_EPISODES_ADDR="", EXPERT_ADDR="", EXPERT_RATIO="0", SEED=str(seed),
                   HEARTBEAT_S=str(HEARTBEAT_S))
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([PY, "-m", "services.emulator.main"], cwd=str(ROOT), env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)   # none outlives a killed bench

    def pids(self) -> list[int]:
        """MAME first, so a resumed worker finds its MAME running."""
        return children(self.proc.pid) + [self.proc.pid]

    def read(self) -> tuple[float, float, float] | None:
        """(time, video frames, game ticks) or None if /metrics is not up yet."""
        try:
            m = metrics(self.port, timeout=2)
        except OSError:
            return None
        if "tempest_emulator_video_frames_total" not in m or "tempest_frames_total" not in m:
            return None
        return time.monotonic(), m["tempest_emulator_video_frames_total"], m["tempest_frames_total"]

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {self.proc.returncode}: {self.log_tail()}")

    def log_tail(self, n: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-n:])
        except OSError:
            return ""

    def mark(self, timeout: float = WINDOW_TIMEOUT_S) -> tuple[float, float, float]:
        """The first reading after the video counter moved (it moves once per heartbeat, so a
        reading taken right after a move is exact to within POLL_S)."""
        deadline = time.monotonic() + timeout
        prev = None
        while time.monotonic() < deadline:
            self.check_alive()
            r = self.read()
            if r is not None and r[2] > 0:
                if prev is not None and r[1] != prev[1]:
                    return r
                prev = r
            time.sleep(POLL_S)
        raise RuntimeError(f"worker's counters did not move in {timeout:.0f} s: {self.log_tail()}")

    def stop(self) -> None:
        signal_all(self.pids(), signal.SIGCONT)
        stop_proc(self.proc, f"worker {self.proc.pid}", timeout=15, detail=lambda: self.log_tail(8))
        self._log.close()


def worker_windows(workers: list[Worker]) -> list[tuple[float, float]]:
    """(video fps, ticks/s) of each running worker over >= WINDOW_FRAMES video frames, between
    two readings each taken right after a counter move."""
    marks = [w.mark() for w in workers]
    prev: list[tuple[float, float, float]] = list(marks)
    ends: list[tuple[float, float, float] | None] = [None] * len(workers)
    deadline = time.monotonic() + WINDOW_TIMEOUT_S
    while any(e is None for e in ends):
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers did not cover {WINDOW_FRAMES} video frames in {WINDOW_TIMEOUT_S} s")
        time.sleep(POLL_S)
        for i, w in enumerate(workers):
            if ends[i] is not None:
                continue
            w.check_alive()
            r = w.read()
            if r is None:
                continue
            if r[1] != prev[i][1] and r[1] - marks[i][1] >= WINDOW_FRAMES:
                ends[i] = r
            prev[i] = r
    return [((e[1] - m[1]) / (e[0] - m[0]), (e[2] - m[2]) / (e[0] - m[0])) for m, e in zip(marks, ends)]


def main() -> int:
    roms = rompath("emulator")
    log(f"ROMs: {roms}; up to {ROUNDS} rounds of raw / worker / two workers, {WINDOW_FRAMES} video frames each")
    raw_fps, worker_fps, worker_tps, ratios, speedups = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-emulator-") as d:
        tmp = Path(d)
        contenders: list = []
        try:
            for make in (lambda: RawMame(roms, tmp), lambda: Worker(roms, tmp, 101), lambda: Worker(roms, tmp, 102)):
                contenders.append(make())
            raw, wa, wb = contenders
            log("starting raw MAME and two workers; waiting for play")
            raw.wait_in_play()
            wa.mark(START_TIMEOUT_S)
            wb.mark(START_TIMEOUT_S)
            for c in contenders:
                signal_all(c.pids(), signal.SIGSTOP)

            def run(running: list, measure):
                for c in running:
                    signal_all(c.pids(), signal.SIGCONT)
                try:
                    return measure()
                finally:
                    for c in running:
                        signal_all(c.pids(), signal.SIGSTOP)

            steps = {
                "raw": lambda: run([raw], raw.window),
                "worker": lambda: run([wa], lambda: worker_windows([wa])[0]),
                "both": lambda: run([wa, wb], lambda: worker_windows([wa, wb])),
            }
            order = ["raw", "worker", "both"]
            for i in range(ROUNDS):
                if i >= MIN_ROUNDS and time.monotonic() - T0 > ROUNDS_BUDGET_S:
                    log(f"time budget: stopping after {i} rounds")
                    break
                got = {name: steps[name]() for name in order[i % 3:] + order[:i % 3]}
                (v, t), both = got["worker"], got["both"]
                raw_fps.append(got["raw"])
                worker_fps.append(v)
                worker_tps.append(t)
                ratios.append(v / got["raw"])
                speedups.append((both[0][0] + both[1][0]) / v)
                log(f"round {i + 1}: raw {got['raw']:.0f} fps, worker {v:.0f} fps ({t:.0f} ticks/s), "
                    f"ratio {ratios[-1]:.3f}; two workers {both[0][0]:.0f} + {both[1][0]:.0f} fps, "
                    f"speedup {speedups[-1]:.3f}")
        finally:
            for c in contenders:
                try:
                    c.stop()     # Worker.stop resumes it first: a frozen process cannot act on SIGTERM
                except Exception as exc:  # stop the others all the same
                    log(f"stopping {c}: {exc}")
    result = {
        "raw_video_fps": round(statistics.median(raw_fps), 1),
        "worker_video_fps": round(statistics.median(worker_fps), 1),
        "ratio": round(statistics.median(ratios), 3),
        "worker_frames_per_s": round(statistics.median(worker_tps), 1),
        "pairs": len(ratios),
        "two_workers_speedup": round(statistics.median(speedups), 3),
    }
    log(f"ratios {[round(x, 3) for x in ratios]}, speedups {[round(x, 3) for x in speedups]}; "
        f"total {time.monotonic() - T0:.0f}s")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
