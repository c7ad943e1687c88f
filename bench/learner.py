"""Learner throughput: the bare step ceiling against the learner fed through replay + Redis.

Run as `.venv/bin/python bench/learner.py` (no arguments).  Device: cuda when available, else
cpu.  Batch: 16384 on cuda, 1024 on cpu (env BENCH_BATCH overrides).  The network is the
learner's default: tempest_common.network.DuelingQNetwork(STATE_SIZE, NUM_ACTIONS) with its
default hidden widths; its parameter count is reported as `params`.

  bare_samples_per_s      this process: online + target copy + Adam on the device, random data
                          ALREADY ON THE DEVICE in the replay's wire dtypes (float16 states,
                          int16 actions and expert labels (95% labelled, as with the workers'
                          EXPERT_LABELS), float32 reward/discount/weight), cast in the step as the
                          learner casts them (state -> float32, action and label -> long); each step is services.learner.dqn.train_step with
                          the learner's settings (max_grad_norm 5, no target clamp, bc_weight 1 with margin 0.05,
                          autocast bf16 on cuda, none on cpu) followed by the soft target update
                          (tau 0.005).  Four data sets are rotated.  Timed as whole steps over a
                          window of BARE_S seconds after a warm-up (train_step reads scalars back
                          every step, and the window ends with a device synchronize).
  pipeline_samples_per_s  the real stack in separate processes: redis-server (no persistence),
                          the replay service (`python -m services.replay.main`, float16 states,
                          PER alpha 0.6), filled from a separate producer process (TransitionSender,
                          batches of 64..4096 rows from 8 streams, episodes of 300..3000 steps
                          ending in terminals, 10% truncated) and waited for until the replay's
                          tempest_replay_size AND tempest_replay_redis_written_total show every
                          row; then the real learner (`python -m services.learner.main`,
                          TRAINING_STEPS_PER_SAMPLE=0 i.e. unpaced, PRIORITIZED=1 beta 0.4,
                          N_STEP=5, priority updates sent back every step, weights published
                          every 50 steps as configured by default).  The rate is the increase of
                          the learner's own counter tempest_learner_samples_total on its /metrics
                          over a window of PIPE_S seconds, divided by the window's clock time.
  ratio                   median over the pairs of pipeline / bare.

Side by side, alternating: after the learner's warm-up the run alternates a bare window and a
pipeline window, PAIRS times (bare, pipe, bare, pipe, ...).  During a bare window the learner
process is frozen with SIGSTOP (its two in-flight sample replies wait in its socket; the replay
and Redis go idle), so the bare steps get the machine the learner would have; after SIGCONT the
learner runs RESUME_S seconds before its window opens.  Each window's log line gives the CPU
cores kept busy by the bench process, the learner, the replay, redis and by all other processes
(from /proc), so a window disturbed by other work on the machine shows.  bare/pipeline figures are the medians of
their windows; ratio is the median of the per-pair ratios.

Redis: env REDIS_SERVER names the binary (else `redis-server` on PATH, else /usr/bin/redis-server);
it is started under the name redis-server, so Debian's multi-call redis-check-rdb works too.  Env
REDIS_LD_LIBRARY_PATH is prepended to LD_LIBRARY_PATH for the redis process alone.
Other overrides (env): BENCH_FILL (transitions), BENCH_PAIRS, BENCH_PIPE_S, BENCH_BARE_S;
BENCH_LOG_DIR: copy the redis, replay and learner logs there at the end.

Progress goes to stderr; the last stdout line is one JSON object.
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import copy  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.harness import (CpuWatch, clean_env, free_port, logger, metrics, start_redis, start_replay,  # noqa: E402
                           stop_proc, wait_for)
from bench.streams import stream_batches  # noqa: E402
from services.learner.dqn import Batch, soft_update, train_step  # noqa: E402
from services.learner.settings import LiveSettings  # noqa: E402
from tempest_common.actions import NUM_ACTIONS  # noqa: E402
from tempest_common.messages import NO_ACTION  # noqa: E402
from tempest_common.network import DuelingQNetwork  # noqa: E402
from tempest_common.state_vector import STATE_SIZE  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
BATCH = int(os.environ.get("BENCH_BATCH") or (16384 if CUDA else 1024))
FILL = int(os.environ.get("BENCH_FILL") or (500_000 if CUDA else 300_000))
CAPACITY = max(600_000, FILL)
PAIRS = int(os.environ.get("BENCH_PAIRS") or (3 if CUDA else 5))
PIPE_S = float(os.environ.get("BENCH_PIPE_S") or (30.0 if CUDA else 25.0))
BARE_S = float(os.environ.get("BENCH_BARE_S") or 15.0)
LEARNER_WARM_S = 15.0 if CUDA else 10.0   # after the learner's first step, before the first window
RESUME_S = 3.0                            # after SIGCONT, before a pipeline window
STREAMS = 8
N_STEP, GAMMA, BETA = 5, 0.995, 0.4
MAX_GRAD_NORM, TAU = 5.0, 0.005           # the learner's defaults (checked against LiveSettings below)
BC_WEIGHT, BC_MARGIN = 1.0, 0.05
PREFIX = "bench:learner"


log = logger("learner")


# -- the producer (a separate process) -----------------------------------------------------------
def producer(total_rows: int, pull_url: str, done) -> None:
    from services.replay.client import TransitionSender
    rng = np.random.default_rng(1234)
    per = [total_rows // STREAMS + (i < total_rows % STREAMS) for i in range(STREAMS)]
    streams = [stream_batches(i, n, rng, NUM_ACTIONS) for i, n in enumerate(per)]
    sender = TransitionSender(pull_url)
    sent = 0
    while any(streams):                      # interleave the streams batch by batch
        for s in streams:
            if s:
                b = s.pop(0)
                sender.send(b)
                sent += b.num_rows()
    assert sent == total_rows, (sent, total_rows)
    done.wait()                              # keep the socket open until the replay holds it all
    sender.close()


# -- bare ----------------------------------------------------------------------------------------
class Bare:
    """The learner's step on data already on the device (see the module docstring)."""

    def __init__(self, n_sets: int = 4):
        dev = torch.device(DEVICE)
        torch.manual_seed(0)
        self.online = DuelingQNetwork(STATE_SIZE, NUM_ACTIONS).to(dev)
        self.target = copy.deepcopy(self.online)
        self.opt = torch.optim.Adam(self.online.parameters(), lr=LiveSettings().lr)
        self.autocast = torch.bfloat16 if CUDA else None
        g = torch.Generator(device="cpu").manual_seed(1)
        self.sets = []
        for _ in range(n_sets):
            done = torch.rand(BATCH, generator=g) < 0.02
            self.sets.append(dict(
                state=torch.rand(BATCH, STATE_SIZE, generator=g).half().to(dev),
                action=torch.randint(0, NUM_ACTIONS, (BATCH,), generator=g).to(torch.int16).to(dev),
                reward=(torch.randn(BATCH, generator=g) * 0.1).to(dev),
                discount=torch.where(done, 0.0, GAMMA ** N_STEP).float().to(dev),
                next_state=torch.rand(BATCH, STATE_SIZE, generator=g).half().to(dev),
                weight=torch.rand(BATCH, generator=g).clamp_min(0.05).to(dev),
                expert_action=torch.where(torch.rand(BATCH, generator=g) < 0.95,
                                          torch.randint(0, NUM_ACTIONS, (BATCH,), generator=g), NO_ACTION)
                .to(torch.int16).to(dev)))
        self.i = 0

    def step(self) -> None:
        d = self.sets[self.i % len(self.sets)]
        self.i += 1
        batch = Batch(state=d["state"].float(), action=d["action"].long(), reward=d["reward"].float(),
                      discount=d["discount"].float(), next_state=d["next_state"].float(),
                      weight=d["weight"].float(), expert_action=d["expert_action"].long())
        stats = train_step(self.online, self.target, self.opt, [batch], MAX_GRAD_NORM, None, BC_WEIGHT,
                           autocast_dtype=self.autocast, bc_margin=BC_MARGIN)
        if not stats.applied:
            raise RuntimeError("bare step: non-finite loss or gradient")
        soft_update(self.target, self.online, TAU)

    def sync(self) -> None:
        if CUDA:
            torch.cuda.synchronize()

    def window(self, seconds: float) -> tuple[float, int, float]:
        """Whole steps until `seconds` have passed; returns (samples/s, steps, seconds)."""
        self.sync()
        n, t0 = 0, time.perf_counter()
        while True:
            self.step()
            n += 1
            if time.perf_counter() - t0 >= seconds:
                break
        self.sync()
        dt = time.perf_counter() - t0
        return n * BATCH / dt, n, dt


# -- main ----------------------------------------------------------------------------------------
def main() -> int:
    live = LiveSettings()
    assert (live.max_grad_norm, live.tau, live.use_soft_target, live.clamp_targets, live.bc_weight, live.bc_margin) == \
        (MAX_GRAD_NORM, TAU, True, False, BC_WEIGHT, BC_MARGIN), "the learner's defaults changed: update the bare step"
    t_start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="bench_learner_")
    procs: list[tuple[subprocess.Popen, str]] = []
    prod = None
    ctx = mp.get_context("fork")             # forked before this process touches CUDA
    done = ctx.Event()
    learner = None
    params = DuelingQNetwork(STATE_SIZE, NUM_ACTIONS).param_count()
    log(f"device {DEVICE}, torch {torch.__version__}, {torch.get_num_threads()} torch threads; "
        f"batch {BATCH}; network DuelingQNetwork({STATE_SIZE}, {NUM_ACTIONS}) default hidden, {params:,} params; "
        f"{PAIRS} pairs of bare {BARE_S:.0f} s / pipeline {PIPE_S:.0f} s windows")
    try:
        # -- redis + replay --------------------------------------------------------------------------
        rp, rc, redis_port = start_redis(workdir)
        procs.append((rp, "redis-server"))
        replay = start_replay(workdir, redis_port, PREFIX, CAPACITY, env=clean_env)
        procs.append((replay.proc, "replay service"))
        sp, replay_metrics, pull_url, router_url = replay.proc, replay.metrics_port, replay.pull_url, replay.router_url
        log(f"replay service up (pid {sp.pid}), capacity {CAPACITY:,}")

        # -- fill ----------------------------------------------------------------------------------
        t0 = time.monotonic()
        prod = ctx.Process(target=producer, args=(FILL, pull_url, done), daemon=True)
        prod.start()
        last = t0
        while True:
            m = metrics(replay_metrics)
            size, written = m.get("tempest_replay_size", 0), m.get("tempest_replay_redis_written_total", 0)
            if size >= FILL and written >= FILL:
                break
            if m.get("tempest_replay_lost_total", 0) > 0 or m.get("tempest_replay_malformed_total", 0) > 0:
                raise RuntimeError(f"replay lost or refused rows while filling: {m}")
            if not prod.is_alive() and prod.exitcode not in (None, 0):
                raise RuntimeError(f"producer exited with {prod.exitcode}")
            replay.check_alive()
            if time.monotonic() - t0 > 300:
                raise TimeoutError(f"fill: only {size:,.0f} in the replay, {written:,.0f} in Redis after 300 s")
            if time.monotonic() - last > 5:
                log(f"fill: {size:,.0f} / {FILL:,} in the replay, {written:,.0f} written to Redis")
                last = time.monotonic()
            time.sleep(0.25)
        done.set()
        prod.join(timeout=30)
        log(f"fill: {FILL:,} transitions in the replay and in Redis ({rc.dbsize()} keys) after "
            f"{time.monotonic() - t0:.1f} s")

        # -- bare: build + warm up (before the learner starts, so neither disturbs the other) ------
        name = torch.cuda.get_device_name() if CUDA else f"{os.cpu_count()} CPUs"   # CUDA only after the fork
        log(f"bare: {DEVICE} is {name}")
        bare = Bare()
        t0 = time.perf_counter()
        for _ in range(10 if CUDA else 3):
            bare.step()
        bare.sync()
        log(f"bare: built and warmed up ({bare.i} steps, {time.perf_counter() - t0:.1f} s)")

        # -- learner -------------------------------------------------------------------------------
        lm = free_port()
        learner_log = os.path.join(workdir, "learner.log")
        learner = subprocess.Popen([sys.executable, "-m", "services.learner.main"], cwd=ROOT, env=clean_env(
            REPLAY_ADDR=router_url, LEARNER_EPISODES_BIND=f"tcp://127.0.0.1:{free_port()}",
            WEIGHTS_BIND=f"tcp://127.0.0.1:{free_port()}", CONTROL_BIND=f"tcp://127.0.0.1:{free_port()}",
            METRICS_PORT=str(lm), DEVICE=DEVICE, STATE_DIM=str(STATE_SIZE), BATCH_SIZE=str(BATCH),
            TRAINING_STEPS_PER_SAMPLE="0", PRIORITIZED="1", PER_BETA=str(BETA), N_STEP=str(N_STEP),
            GAMMA=str(GAMMA), CHECKPOINT_DIR=os.path.join(workdir, "ckpt"), RESUME="0",
            CHECKPOINT_EVERY_S="86400", SEED="0"), stdout=open(learner_log, "w"), stderr=subprocess.STDOUT)
        procs.append((learner, "learner"))

        def learner_stepping():
            if learner.poll() is not None:
                raise RuntimeError(f"learner exited with {learner.returncode}: " + open(learner_log).read()[-3000:])
            return metrics(lm).get("tempest_learner_steps_total", 0) > 0
        t0 = time.monotonic()
        wait_for(learner_stepping, 240, "the learner's first step", poll=0.2)
        log(f"learner (pid {learner.pid}) stepping after {time.monotonic() - t0:.1f} s; warm-up {LEARNER_WARM_S:.0f} s")
        time.sleep(LEARNER_WARM_S)

        # -- alternate -----------------------------------------------------------------------------
        pids = {"bench": os.getpid(), "learner": learner.pid, "replay": sp.pid, "redis": rp.pid}
        bare_rates, pipe_rates = [], []
        for i in range(PAIRS):
            os.kill(learner.pid, signal.SIGSTOP)
            time.sleep(0.5)                  # the replay answers the in-flight requests, then idles
            watch = CpuWatch(pids)
            rate, n, dt = bare.window(BARE_S)
            bare_rates.append(rate)
            log(f"pair {i + 1}/{PAIRS} bare:     {rate:12,.0f} samples/s ({n} steps in {dt:.1f} s, "
                f"{n / dt:.1f} steps/s); CPU cores busy: {watch.report()}")
            os.kill(learner.pid, signal.SIGCONT)
            time.sleep(RESUME_S)
            m0, r0 = metrics(lm), metrics(replay_metrics)
            watch = CpuWatch(pids)
            t0 = time.perf_counter()
            time.sleep(PIPE_S)
            m1 = metrics(lm)
            dt = time.perf_counter() - t0
            cpu = watch.report()
            r1 = metrics(replay_metrics)
            if learner.poll() is not None:
                raise RuntimeError(f"learner exited with {learner.returncode}: " + open(learner_log).read()[-3000:])
            samples = m1["tempest_learner_samples_total"] - m0["tempest_learner_samples_total"]
            steps = m1["tempest_learner_steps_total"] - m0["tempest_learner_steps_total"]
            rate = samples / dt
            pipe_rates.append(rate)
            waits = {k.split('"')[1]: m1[k] - m0.get(k, 0.0) for k in m1
                     if k.startswith("tempest_learner_wait_seconds_total") and m1[k] - m0.get(k, 0.0) > 0}
            n_obs = r1["tempest_replay_sample_seconds_count"] - r0["tempest_replay_sample_seconds_count"]
            serve = (r1["tempest_replay_sample_seconds_sum"] - r0["tempest_replay_sample_seconds_sum"]) / max(1, n_obs)
            log(f"pair {i + 1}/{PAIRS} pipeline: {rate:12,.0f} samples/s ({steps:.0f} steps in {dt:.1f} s, "
                f"{steps / dt:.1f} steps/s) ratio {rate / bare_rates[-1]:.3f}; replay {serve * 1e3:.1f} ms/batch "
                f"to sample; CPU cores busy: {cpu}; learner waits: {waits or 'none'}")
        m = metrics(lm)
        if m.get("tempest_learner_nonfinite_batches_total", 0) > 0:
            log(f"warning: the learner skipped {m['tempest_learner_nonfinite_batches_total']:.0f} non-finite batches")
        ratios = [p / b for p, b in zip(pipe_rates, bare_rates)]
        result = {"device": DEVICE, "batch": BATCH, "params": params,
                  "bare_samples_per_s": round(statistics.median(bare_rates), 1),
                  "pipeline_samples_per_s": round(statistics.median(pipe_rates), 1),
                  "ratio": round(statistics.median(ratios), 4)}
        log(f"bare {[round(r) for r in bare_rates]}, pipeline {[round(r) for r in pipe_rates]}, "
            f"ratios {[round(r, 3) for r in ratios]}; done in {time.monotonic() - t_start:.0f} s")
        print(json.dumps(result), flush=True)
        return 0
    except BaseException:
        for nm in ("redis.log", "replay.log", "learner.log"):
            path = os.path.join(workdir, nm)
            if os.path.exists(path):
                log(f"--- tail of {nm} ---\n" + open(path, errors="replace").read()[-3000:])
        raise
    finally:
        done.set()
        if prod is not None and prod.is_alive():
            prod.terminate()
            prod.join(timeout=5)
        for p, nm in reversed(procs):
            stop_proc(p, nm)
        keep = os.environ.get("BENCH_LOG_DIR")
        if keep:
            os.makedirs(keep, exist_ok=True)
            for nm in ("redis.log", "replay.log", "learner.log"):
                if os.path.exists(os.path.join(workdir, nm)):
                    shutil.copy(os.path.join(workdir, nm), os.path.join(keep, f"bench_learner_{nm}"))
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
