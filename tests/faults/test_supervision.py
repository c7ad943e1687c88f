"""Faults tier: `make up`'s supervisor (tools/local_stack.py) on the real game.

kill -9 of a service restarts that service alone, by itself, while every other process keeps its
pid and the pipeline goes on (frames and learner steps grow again); a service that keeps dying
at start is backed off, not restarted in a tight loop; Ctrl-C (SIGINT) still stops everything,
MAME included, within seconds.  (Under honcho, the first exit stopped the whole stack.)
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import REPO, pid_alive, scrape, wait_for
from tests.faults.books import Books, check_sampled_windows, redis_next_seq
from tests.game.test_local_stack import descendants, pick_offset

pytestmark = [pytest.mark.game, pytest.mark.integration]
SUPERVISORCTL = str(REPO / ".venv" / "bin" / "supervisorctl")
TRANSITION_BATCH = 64             # the worker's default batch of rows
IN_FLIGHT = 4 * TRANSITION_BATCH   # rows a steady stack may have on the wire between two scrapes


def ctl(run: Path, *args: str) -> str:
    out = subprocess.run([SUPERVISORCTL, "-c", str(run / "supervisord.conf"), *args], capture_output=True,
                         text=True, timeout=30)
    return out.stdout


def pids(run: Path) -> dict[str, int]:
    """name -> pid of every RUNNING program."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s+RUNNING\s+pid (\d+)", ctl(run, "status"), re.M)}


def counter(port: int, name: str) -> float:
    return scrape(port).get(name, 0.0)


def start_stack(tmp_path, emulators: int, **settings: str):
    offset = pick_offset()
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO), MIN_SIZE_TO_SAMPLE="300", BATCH_SIZE="64", PUBLISH_EVERY_STEPS="5",
               CHECKPOINT_EVERY_S="15", REDIS_MAXMEMORY="256mb", **settings)
    log = open(tmp_path / "stack.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "tools.local_stack", "--emulators", str(emulators), "--run-dir",
                             str(run), "--port-offset", str(offset)], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    return proc, run, offset, log


@pytest.fixture()
def stack(rompath, tmp_path):
    proc, run, offset, log = start_stack(tmp_path, 1, TEMPEST_ROMPATH=rompath)
    try:
        yield proc, run, offset
    finally:
        if proc.poll() is None:
            for p in [proc.pid, *descendants(proc.pid)]:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
        log.close()


def mame_pid(worker_pid: int) -> int | None:
    for p in descendants(worker_pid):
        try:
            if "mame" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace"):
                return p
        except OSError:
            pass
    return None


def newest_checkpoint_step(run: Path) -> int:
    steps = [int(m.group(1)) for f in (run / "checkpoints").glob("checkpoint-*.pt")
             if (m := re.search(r"-(\d+)\.pt$", f.name))]
    return max(steps, default=0)


def test_a_killed_service_restarts_alone_and_ctrl_c_still_stops_everything(stack):
    """kill -9, in turn, the expert, the replay, Redis, MAME, the worker and the learner.  After
    each: that process is back by itself (the others keep their pids; MAME is the worker's to
    restart), frames and learner steps grow again; after the replay's and Redis' deaths the
    rebuilt replay holds at least what it reported before; the learner resumes at (or past) its
    newest checkpoint and the worker takes the new incarnation's weights.  Between kills the
    delivery books balance (tests/faults/books.py); at the end, no sampled n-step window crosses
    a gap: each is judged against the rows Redis holds, by seq."""
    proc, run, offset = stack
    learner_port, worker_port, replay_port = 9104 + offset, 9110 + offset, 9103 + offset
    redis_url, replay_url = f"redis://127.0.0.1:{6390 + offset}/0", f"tcp://127.0.0.1:{5560 + offset}"
    worker = f"emulator-{worker_port}"
    names = {"redis", "prometheus", "replay", "expert", "learner", "doctor", worker}
    wait_for(lambda: set(pids(run)) == names, 90, interval=1, what=f"every program RUNNING: {names}")
    wait_for(lambda: counter(learner_port, "tempest_learner_steps_total") > 0, 180, interval=2,
             what="the learner training on the workers' transitions")

    steady = Books.read(worker_port, replay_port)
    horizon = 0
    for victim in ("expert", "replay", "redis", "mame", worker, "learner"):
        if victim == "redis":
            # rows below Redis' next seq are in the mirror and in Redis alike; 2 s: fsync'd
            # (appendfsync everysec), so the kill cannot take them
            horizon = redis_next_seq(redis_url)
            time.sleep(2)
        time.sleep(3)   # a steady phase whose books must balance
        last = Books.read(worker_port, replay_port)
        problem = steady.unbalanced(last, IN_FLIGHT, TRANSITION_BATCH)
        assert problem is None, f"the books do not balance before the kill of {victim}: {problem} ({steady} -> {last})"
        before = pids(run)
        size_before = counter(replay_port, "tempest_replay_size")
        incarnations = counter(worker_port, "tempest_emulator_learner_incarnations_total")
        if victim == "learner":
            wait_for(lambda: newest_checkpoint_step(run) > 0, 60, what="a learner checkpoint to resume from")
            checkpointed = newest_checkpoint_step(run)
        killed_at = time.monotonic()
        if victim == "mame":
            old_mame = mame_pid(before[worker])
            os.kill(old_mame, signal.SIGKILL)
            wait_for(lambda: (m := mame_pid(before[worker])) and m != old_mame, 60, interval=0.5,
                     what="the worker restarting its MAME")
            back = pids(run)
            assert back == before, f"kill -9 of MAME restarted services: before {before}, after {back}"
        else:
            os.kill(before[victim], signal.SIGKILL)
            back = wait_for(lambda: (p := pids(run)).get(victim, before[victim]) != before[victim] and p, 60,
                            interval=0.5, what=f"{victim} restarted by the supervisor")
            assert set(back) == names, f"after kill -9 of {victim} these run: {sorted(back)}"
            others = {n: p for n, p in back.items() if n != victim}
            assert others == {n: p for n, p in before.items() if n != victim}, \
                f"kill -9 of {victim} restarted others too: before {before}, after {back}"
        assert proc.poll() is None, "the supervisor itself exited"
        back_s = time.monotonic() - killed_at
        if victim in ("replay", "redis"):
            # Redis' append-only file syncs every second: at most that much may be lost with it
            wait_for(lambda: counter(replay_port, "tempest_replay_size") >= size_before, 120, interval=1,
                     what=f"the replay rebuilt to its size before the kill of {victim} ({size_before:.0f})")
        if victim == "learner":
            resumed = wait_for(lambda: scrape(learner_port)["tempest_learner_step"] + 1, 120, interval=1,
                               what="the restarted learner's metrics") - 1
            assert resumed >= checkpointed, f"the learner resumed at step {resumed}, its checkpoint was at {checkpointed}"
            wait_for(lambda: counter(worker_port, "tempest_emulator_learner_incarnations_total") > incarnations, 120,
                     interval=1, what="the worker taking the restarted learner's weights")
        frames = wait_for(lambda: counter(worker_port, "tempest_frames_total") + 1, 60, what="the worker's metrics")
        steps = counter(learner_port, "tempest_learner_steps_total")
        wait_for(lambda: counter(learner_port, "tempest_learner_steps_total") > steps
                 and counter(worker_port, "tempest_frames_total") + 1 > frames,
                 180, interval=2, what=f"frames and learner steps growing again after the kill of {victim}")
        steady = Books.read(worker_port, replay_port)
        loss = last.loss_since(steady, replay_restarted=victim == "replay")
        print(f"kill -9 {victim}: back in {back_s:.1f} s, frames and steps growing {time.monotonic() - killed_at:.1f} s "
              f"after the kill; replay size {size_before:.0f} before, {counter(replay_port, 'tempest_replay_size'):.0f} now; "
              f"counted lost: {loss}")

    time.sleep(3)
    problem = steady.unbalanced(Books.read(worker_port, replay_port), IN_FLIGHT, TRANSITION_BATCH)
    assert problem is None, f"the books do not balance after the last restart: {problem}"
    counts = check_sampled_windows(replay_url, redis_url, horizon)
    print(f"sampled n-step windows judged against Redis: {counts} (durable horizon: seq {horizon})")
    assert counts["below_horizon"] > 1000, f"too few sampled rows could be judged: {counts}"

    procs = descendants(proc.pid)
    mame = [p for p in procs if "mame" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
    assert mame, "the stack ran a MAME"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)   # what Ctrl-C does
    proc.wait(120)
    wait_for(lambda: not any(pid_alive(p) for p in procs), 15, what="every service and MAME to exit")
    stopped_s = time.monotonic() - t0
    assert stopped_s < 90, f"Ctrl-C took {stopped_s:.0f} s to stop the stack"


@pytest.mark.integration
def test_a_service_that_dies_at_every_start_is_backed_off_and_the_rest_runs_on(tmp_path):
    """LR=-1 makes the learner exit at start with its configuration error, every time: the
    supervisor retries it with growing pauses (no tight loop), and the other services run on."""
    proc, run, offset, log = start_stack(tmp_path, 0, LR="-1")
    try:
        def pauses() -> list[float]:
            """Seconds from each exit of the learner to its next start, from supervisord's lines."""
            events = re.findall(r"^(\S+ \S+) \w+ (exited|spawned): '?learner'?", (tmp_path / "stack.log").read_text(), re.M)
            at = lambda stamp: datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()  # noqa: E731
            return [at(b[0]) - at(a[0]) for a, b in zip(events, events[1:]) if a[1] == "exited" and b[1] == "spawned"]
        gaps = wait_for(lambda: (g := pauses())[5:] and g, 180, interval=0.5, what="the learner restarted six times")
        # supervisord's back-off grows by about a second per failed start (checked on its 1 s tick);
        # on a loaded machine the first start may outlast START_SECS (torch's import) and count as
        # a success, so the growth starts one restart later: six pauses show it either way
        assert all(later > earlier - 0.2 for earlier, later in zip(gaps, gaps[1:])) and gaps[-1] > gaps[0] + 1.5, \
            f"pauses before restarts: {gaps}"
        assert "LR" in (run / "logs" / "learner.log").read_text()   # its one clear line, in its own log
        running = pids(run)
        assert {"redis", "prometheus", "replay", "expert"} <= set(running) and "learner" not in running, running
        assert scrape(9102 + offset) is not None   # the expert still serves its metrics
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
