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
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

import numpy as np  # noqa: E402

from tempest_common.messages import ACTOR_EXPERT, ACTOR_NETWORK, NO_ACTION, TransitionBatch  # noqa: E402
from tempest_common.state_vector import STATE_SIZE  # noqa: E402

REDIS_BIN = "/usr/bin/redis-server"
PREFIX = "bench:replay"
BATCH_ROWS = 64                 # the emulator worker's default transition batch
PRODUCERS = 2
PER_PRODUCER = 300_032          # transitions per producer (multiple of 64): 600,064 in all
SAMPLE_BATCH = 16384
N_STEP, GAMMA, BETA = 5, 0.995, 0.4
SAMPLE_SECONDS = 18.0
INSERT_TIMEOUT_S = 240.0


def log(msg: str) -> None:
    print(f"[bench/replay {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- transitions ---------------------------------------------------------------------------------
def make_batches(stream_idx: int, total_rows: int, seed: int) -> list[TransitionBatch]:
    """One stream's transitions in 64-row batches: episodes (lives) of realistic length, steps from
    0, terminal at the end of most episodes, a few truncated (bootstrap-only last record)."""
    rng = np.random.default_rng(seed)
    ep = np.empty(total_rows, np.int64)
    step = np.empty(total_rows, np.int32)
    terminal = np.zeros(total_rows, bool)
    truncated = np.zeros(total_rows, bool)
    pos, episode = 0, stream_idx * 1_000_000_000
    while pos < total_rows:
        length = int(rng.integers(300, 3000))
        end = min(total_rows, pos + length)
        ep[pos:end] = episode
        step[pos:end] = np.arange(end - pos, dtype=np.int32)
        if end == pos + length:              # finished within the data (the last one stays open)
            if rng.random() < 0.1:
                truncated[end - 1] = True
            else:
                terminal[end - 1] = True
        pos, episode = end, episode + 1
    action = rng.integers(0, 64, total_rows).astype(np.int16)
    action[truncated] = NO_ACTION
    actor = np.where(rng.random(total_rows) < 0.3, ACTOR_EXPERT, ACTOR_NETWORK).astype(np.uint8)
    reward_game = np.where(rng.random(total_rows) < 0.02, 150.0, 0.0).astype(np.float32)
    reward_shaping = (rng.standard_normal(total_rows) * 0.01).astype(np.float32)
    state = rng.random((total_rows, STATE_SIZE), dtype=np.float32).astype(np.float16)
    stream_id, worker_id = f"bench-stream-{stream_idx}", f"bench-worker-{stream_idx}"
    out = []
    for a in range(0, total_rows, BATCH_ROWS):
        b = slice(a, a + BATCH_ROWS)
        out.append(TransitionBatch(stream_id, worker_id, ep[b].copy(), step[b].copy(), actor[b].copy(),
                                   action[b].copy(), reward_game[b].copy(), reward_shaping[b].copy(),
                                   terminal[b].copy(), truncated[b].copy(), state[b].copy()))
    return out


def raw_bytes_per_transition(batch: TransitionBatch) -> int:
    rows = batch.num_rows()
    total = 0
    for name in ("episode_id", "step", "actor", "action", "reward_game", "reward_shaping",
                 "terminal", "truncated", "state"):
        arr = getattr(batch, name)
        assert arr.shape[0] == rows
        total += arr.nbytes
    assert total % rows == 0
    return total // rows


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
                + int(r.action.sum()) + int(r.actor.sum()))

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


# -- helpers -------------------------------------------------------------------------------------
def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
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


def minor_faults(pid: int) -> int:
    """Minor page faults of a process so far (/proc/PID/stat field 10); -1 where unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rpartition(")")[2].split()[7])
    except (OSError, ValueError, IndexError):
        return -1


def redis_info_memory(r) -> int:
    return int(r.info("memory")["used_memory"])


def wait_for(pred, timeout: float, what: str, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(poll)
    raise TimeoutError(f"timed out waiting for {what}")


def stop_proc(p: subprocess.Popen, name: str) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            log(f"{name} did not stop on SIGTERM; killing it")
            p.kill()
            p.wait()


def main() -> int:
    import redis
    t_start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="bench_replay_")
    procs: list[tuple[subprocess.Popen, str]] = []
    producers: list[mp.Process] = []
    ctx = mp.get_context("fork")
    stop = ctx.Event()
    try:
        # Redis
        redis_port = free_port()
        redis_log = open(os.path.join(workdir, "redis.log"), "w")
        rp = subprocess.Popen([REDIS_BIN, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", workdir, "--daemonize", "no"],
                              stdout=redis_log, stderr=subprocess.STDOUT)
        procs.append((rp, "redis-server"))
        rc = redis.Redis(host="127.0.0.1", port=redis_port)

        def redis_up():
            try:
                return rc.ping()
            except redis.ConnectionError:
                return False
        wait_for(redis_up, 20, "redis-server")
        rc.flushall()
        log(f"redis-server {rc.info('server')['redis_version']} on port {redis_port}")

        # replay service
        pull_port, router_port, metrics_port = free_port(), free_port(), free_port()
        pull_url, router_url = f"tcp://127.0.0.1:{pull_port}", f"tcp://127.0.0.1:{router_port}"
        env = dict(os.environ, REDIS_URL=f"redis://127.0.0.1:{redis_port}/0", REPLAY_REDIS_PREFIX=PREFIX,
                   REPLAY_PULL_BIND=pull_url, REPLAY_BIND=router_url, METRICS_PORT=str(metrics_port),
                   STATE_DIM=str(STATE_SIZE), REPLAY_STATE_DTYPE="float16", REPLAY_CAPACITY="1000000",
                   MIN_SIZE_TO_SAMPLE="1000", SAMPLES_PER_INSERT="0", SEED="1", PYTHONPATH=ROOT)
        replay_log_path = os.path.join(workdir, "replay.log")
        replay_log = open(replay_log_path, "w")
        sp = subprocess.Popen([sys.executable, "-m", "services.replay.main"], cwd=ROOT, env=env,
                              stdout=replay_log, stderr=subprocess.STDOUT)
        procs.append((sp, "replay service"))

        def replay_up():
            if sp.poll() is not None:
                raise RuntimeError(f"replay service exited with {sp.returncode}: "
                                   + open(replay_log_path).read()[-2000:])
            try:
                return "serving" in open(replay_log_path).read() and metrics(metrics_port)
            except OSError:
                return False
        wait_for(replay_up, 60, "the replay service", poll=0.2)
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
            stop_proc(p, name)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
