"""Replay service throughput against a real local Redis.

Run as `.venv/bin/python bench/replay.py` (no arguments).  Starts its own redis-server (no
persistence) and the real replay service process (`python -m services.replay.main`) on free
ports, from an empty ring, then measures:

  insert_per_s   one-step transitions/s from TWO producer processes (each its own stream_id),
                 TransitionBatch messages of 64 rows (float16 states of STATE_SIZE), sent with
                 services.replay.client.TransitionSender's socket; counted when the replay has
                 WRITTEN them to Redis (its /metrics counter tempest_replay_redis_written_total).
                 Clock: from the first send until written_total == total sent.
                 The producers PRE-ENCODE their messages (msgpack) before the clock starts, so the
                 figure is the replay's own limit (decode + mirror insert + Redis write), not the
                 producers' encoding cost (on a 2-core machine the producers share CPUs with the
                 replay and Redis).
  bytes_per_transition      Redis INFO used_memory after inserting minus before (empty ring),
                            divided by the transitions Redis holds ({prefix}:rows).
  raw_bytes_per_transition  the array bytes of one transition, from the dtypes of an actual
                            TransitionBatch's row arrays (state row + every per-row field).
  sample_per_s   samples/s delivered to a SEPARATE client process (ReplayClient), batch 16384,
                 prioritized (beta 0.4), n=5, gamma=0.995, a priority update (random new
                 priorities) for every batch via ReplayClient.update_priorities.  ONE sample
                 request is kept in flight: the next batch is requested as soon as the current one
                 arrives, then the client touches the current batch's arrays (sums columns) and
                 sends its priority update (which the replay answers after the in-flight sample).
                 Measured over SAMPLE_SECONDS after a warm-up of 2 batches.

Redis binary: as bench/harness.py's start_redis (env REDIS_SERVER, else redis-server on PATH).
Progress goes to stderr; the last stdout line is one JSON object.
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from bench.harness import logger, metrics, minor_faults, start_redis, start_replay, stop_proc  # noqa: E402
from bench.streams import raw_bytes_per_transition, stream_batches  # noqa: E402
from tempest_common.actions import NUM_ACTIONS  # noqa: E402
from tempest_common.messages import TransitionBatch  # noqa: E402
from tempest_common.state_vector import STATE_SIZE  # noqa: E402

PREFIX = "bench:replay"
BATCH_ROWS = 64                 # the emulator worker's default transition batch
PRODUCERS = 2
PER_PRODUCER = 300_032          # transitions per producer (multiple of 64): 600,064 in all
SAMPLE_BATCH = 16384
N_STEP, GAMMA, BETA = 5, 0.995, 0.4
SAMPLE_SECONDS = 18.0
INSERT_TIMEOUT_S = 240.0

log = logger("replay")


# -- transitions ---------------------------------------------------------------------------------
def make_batches(stream_idx: int, total_rows: int, seed: int) -> list[TransitionBatch]:
    """One stream's transitions in 64-row batches (see bench/streams.py, expert labels included)."""
    return stream_batches(stream_idx, total_rows, np.random.default_rng(seed), n_actions=NUM_ACTIONS,
                          batch_rows=BATCH_ROWS, copy=True)


def producer(stream_idx: int, total_rows: int, pull_url: str, ready, go, stop) -> None:
    from services.replay.client import TransitionSender
    from tempest_common.wire import encode
    batches = make_batches(stream_idx, total_rows, seed=1000 + stream_idx)
    t0 = time.perf_counter()
    payloads = [encode(b) for b in batches]   # pre-encoded: see the module docstring
    log(f"producer {stream_idx}: {len(payloads)} messages encoded in {time.perf_counter() - t0:.2f} s "
        f"({len(payloads[0])} bytes each)")
    del batches
    sender = TransitionSender(pull_url)
    sock = sender._sock                       # the sender's own PUSH socket, sending the pre-encoded bytes
    ready.wait()
    go.wait()
    for p in payloads:
        sock.send(p, copy=False)
    stop.wait()                               # keep the socket open until the replay has it all
    sender.close()


# -- sampling client -----------------------------------------------------------------------------
def sampler(router_url: str, seconds: float, result_q) -> None:
    from services.replay.client import ReplayClient
    client = ReplayClient(router_url, timeout_s=60.0)
    rng = np.random.default_rng(7)
    checksum = 0.0

    def touch(r) -> float:
        # actually read what arrived: sums over the columns the learner uses
        return (float(r.state[:, 0].astype(np.float32).sum()) + float(r.next_state[:, -1].astype(np.float32).sum())
                + float(r.reward.sum()) + float(r.discount.sum()) + float(r.weight.sum())
                + int(r.action.sum()) + int(r.actor.sum()) + int(r.expert_action.sum()))

    for _ in range(2):                        # warm-up, not timed
        r = client.sample(SAMPLE_BATCH, N_STEP, GAMMA, prioritized=True, beta=BETA)
        checksum += touch(r)
        client.update_priorities(r.index, rng.random(len(r.index), dtype=np.float32) + 0.01)
    n_batches = n_rows = 0
    t_wait = t_touch = t_prio = 0.0
    t0 = time.perf_counter()
    rid = client.send_sample(SAMPLE_BATCH, N_STEP, GAMMA, prioritized=True, beta=BETA)
    while True:
        tw = time.perf_counter()
        r = client.receive(rid)
        t_wait += time.perf_counter() - tw
        assert r.state.shape == (SAMPLE_BATCH, STATE_SIZE), r.state.shape
        n_batches += 1
        n_rows += len(r.index)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            break
        rid = client.send_sample(SAMPLE_BATCH, N_STEP, GAMMA, prioritized=True, beta=BETA)  # one in flight
        tt = time.perf_counter()
        checksum += touch(r)
        tp = time.perf_counter()
        t_touch += tp - tt
        # answered after the in-flight sample (whose reply is kept for the next receive)
        client.update_priorities(r.index, rng.random(len(r.index), dtype=np.float32) + 0.01)
        t_prio += time.perf_counter() - tp
    # the last batch arrived at `elapsed`; its priority update is outside the window
    checksum += touch(r)
    client.update_priorities(r.index, rng.random(len(r.index), dtype=np.float32) + 0.01)
    client.close()
    result_q.put({"rows": n_rows, "batches": n_batches, "seconds": elapsed, "wait_s": t_wait,
                  "touch_s": t_touch, "prio_s": t_prio,
                  "checksum": checksum, "state_dtype": str(r.state.dtype)})


def redis_info_memory(r) -> int:
    return int(r.info("memory")["used_memory"])


def main() -> int:
    t_start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="bench_replay_")
    procs: list[tuple[subprocess.Popen, str]] = []
    producers: list[mp.Process] = []
    ctx = mp.get_context("fork")
    stop = ctx.Event()
    try:
        rp, rc, redis_port = start_redis(workdir)
        procs.append((rp, "redis-server"))
        replay = start_replay(workdir, redis_port, PREFIX, 1_000_000,
                              env=lambda **kw: dict(os.environ, PYTHONPATH=ROOT, **kw))
        procs.append((replay.proc, "replay service"))
        sp, metrics_port = replay.proc, replay.metrics_port
        pull_url, router_url = replay.pull_url, replay.router_url
        m0 = metrics(metrics_port)
        assert m0.get("tempest_replay_size", -1) == 0, f"ring not empty at start: {m0.get('tempest_replay_size')}"
        time.sleep(0.5)
        mem_before = redis_info_memory(rc)
        log(f"replay service up (pid {sp.pid}), empty ring; redis used_memory {mem_before:,} bytes")

        # raw bytes per transition from an actual batch
        sample_batch = make_batches(0, BATCH_ROWS, seed=0)[0]
        raw_bpt = raw_bytes_per_transition(sample_batch)

        # -- insert ------------------------------------------------------------------------------
        total = PRODUCERS * PER_PRODUCER
        ready, go = ctx.Barrier(PRODUCERS + 1), ctx.Event()
        for i in range(PRODUCERS):
            p = ctx.Process(target=producer, args=(i, PER_PRODUCER, pull_url, ready, go, stop), daemon=True)
            p.start()
            producers.append(p)
        log(f"building and encoding {total:,} transitions in {PRODUCERS} producer processes ...")
        ready.wait(timeout=240)
        time.sleep(0.3)  # let both PUSH sockets connect
        log("producers ready; sending")
        t0 = time.perf_counter()
        go.set()
        last_report, written = t0, 0.0
        while True:
            m = metrics(metrics_port)
            written = m.get("tempest_replay_redis_written_total", 0.0)
            now = time.perf_counter()
            if written >= total:
                break
            if m.get("tempest_replay_lost_total", 0.0) > 0:
                raise RuntimeError(f"replay lost {m['tempest_replay_lost_total']:.0f} transitions")
            if now - t0 > INSERT_TIMEOUT_S:
                raise TimeoutError(f"only {written:.0f} / {total} written after {INSERT_TIMEOUT_S} s")
            if now - last_report > 2:
                log(f"insert: {m.get('tempest_replay_inserted_total', 0):,.0f} in mirror, {written:,.0f} "
                    f"written to Redis, {m.get('tempest_replay_redis_buffered_chunks', 0):.0f} chunks queued "
                    f"({written / (now - t0):,.0f}/s)")
                last_report = now
            time.sleep(0.02)
        insert_s = time.perf_counter() - t0
        insert_per_s = written / insert_s
        stop.set()
        for p in producers:
            p.join(timeout=30)
        log(f"insert: {written:,.0f} transitions written to Redis in {insert_s:.2f} s = {insert_per_s:,.0f}/s")
        m = metrics(metrics_port)
        assert m["tempest_replay_inserted_total"] == total and m["tempest_replay_size"] == total, m
        assert m.get("tempest_replay_malformed_total", 0) == 0

        # -- memory ------------------------------------------------------------------------------
        time.sleep(0.5)
        mem_after = redis_info_memory(rc)
        stored = int(rc.get(f"{PREFIX}:rows"))
        n_chunks = rc.llen(f"{PREFIX}:chunks")
        assert stored == total, (stored, total)
        bytes_per_transition = (mem_after - mem_before) / stored
        chunk_len = rc.strlen(f"{PREFIX}:chunk:0")
        log(f"redis: used_memory {mem_before:,} -> {mem_after:,} bytes for {stored:,} transitions in "
            f"{n_chunks:,} chunks = {bytes_per_transition:.1f} B/transition (raw arrays {raw_bpt} B; "
            f"one chunk's msgpack payload {chunk_len:,} B = {chunk_len / BATCH_ROWS:.1f} B/row)")

        # -- sample ------------------------------------------------------------------------------
        log(f"sampling: batch {SAMPLE_BATCH}, prioritized beta={BETA}, n={N_STEP}, gamma={GAMMA}, "
            f"priority update per batch, one request in flight, {SAMPLE_SECONDS:.0f} s ...")
        q = ctx.Queue()
        sc = ctx.Process(target=sampler, args=(router_url, SAMPLE_SECONDS, q), daemon=True)
        h0 = metrics(metrics_port)
        f0 = minor_faults(sp.pid)
        sc.start()
        res = q.get(timeout=SAMPLE_SECONDS + 180)
        sc.join(timeout=30)
        h1 = metrics(metrics_port)
        faults = minor_faults(sp.pid) - f0
        sample_per_s = res["rows"] / res["seconds"]
        n_obs = h1["tempest_replay_sample_seconds_count"] - h0.get("tempest_replay_sample_seconds_count", 0)
        server_s = h1["tempest_replay_sample_seconds_sum"] - h0.get("tempest_replay_sample_seconds_sum", 0)
        log(f"sample: {res['rows']:,} rows in {res['batches']} batches over {res['seconds']:.2f} s = "
            f"{sample_per_s:,.0f}/s ({res['state_dtype']} states); client: {res['wait_s']:.2f} s in "
            f"receive (wait + decode), {res['touch_s']:.2f} s touching arrays, {res['prio_s']:.2f} s in "
            f"update_priorities (incl. waiting for the in-flight sample); replay spent {server_s / max(1, n_obs) * 1000:.1f} ms per batch building + encoding "
            f"+ sending (sample_seconds, {n_obs:.0f} batches incl. warm-up); stale priority updates "
            f"{h1.get('tempest_replay_stale_priorities_total', 0):.0f}; replay minor page faults "
            f"{faults / max(1, n_obs):,.0f} per batch ({faults / max(1, n_obs) * 4096 / 1e6:.1f} MB of fresh pages)")
        log(f"done in {time.monotonic() - t_start:.0f} s")
        print(json.dumps({"insert_per_s": round(insert_per_s, 1), "sample_per_s": round(sample_per_s, 1),
                          "bytes_per_transition": round(bytes_per_transition, 1),
                          "raw_bytes_per_transition": raw_bpt}), flush=True)
        return 0
    finally:
        stop.set()
        for p in producers:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        for p, name in reversed(procs):
            stop_proc(p, name, timeout=20)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
