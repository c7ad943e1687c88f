"""The flood of tests/fuzz/test_flood.py: the services started as processes, the hostile input
sent to every endpoint, and the readings before and after (the module fixture `flood`)."""
from __future__ import annotations

import collections
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pytest
import zmq

from services.expert.client import ExpertClient
from services.learner.control import ControlClient, control_token_path, read_control_token
from services.replay.client import TransitionSender
from tempest_common.game_state import decode_ram
from tempest_common.wire import encode
from tests.conftest import free_port, scrape, start_service, stop_process, wait_for
from tests.fuzz import hostile as H
from tests.fuzz import hostile_replay as HR
from tests.fuzz import hostile_services as HS
from tests.fuzz.readings import family_total, reason_value, rss
from tests.unit.recorded import FIRST_LIVES


FLOOD = 10_000               # messages per endpoint
RSS_BUDGET = 100 << 20       # bytes a service's resident memory may grow over the flood
REPLY_BYTES_BUDGET = 24 << 20  # the replay's: unsent sample replies it may hold (+ 2 spare buffers)
HEAP_TRIM_WAIT_S = 6.0       # > the replay's HeapTrimmer period
LOG_BUDGET = 256 << 10       # bytes a service's log may hold after the flood (throttled: a few KB)
STATE_DIM, MIN_SIZE, FILL_ROWS = 8, 64, 512
STALL_S = 30.0               # a service that takes no message for this long has stopped reading
SERVICES = ("replay", "expert", "learner")
SEED = int(os.environ.get("TEMPEST_FUZZ_SEED", "20240614"))   # another seed, another flood

# Reject counter families: per message (a message counts once) and per row (priority updates).
MESSAGE_FAMILIES = {"replay": (H.REPLAY_MALFORMED, H.REPLAY_REFUSED), "expert": (H.EXPERT_ERRORS,),
                    "learner": (H.LEARNER_MALFORMED, H.LEARNER_CONTROL_REFUSED, H.LEARNER_REJECTED)}
ROW_FAMILIES = {H.REPLAY_BAD_PRIORITIES}
PROGRESS = {"replay": ("tempest_replay_inserted_total",), "expert": ("tempest_expert_requests_total",),
            "learner": ("tempest_learner_episodes_total",)}


@dataclass
class Endpoint:
    name: str
    service: str
    sock_type: int
    oversize: int                  # bytes of the messages over the size limit
    dropped: str                   # the service's cut-connections series
    url: str = ""


@dataclass
class Sent:
    """What one endpoint was sent: pinned (family, reason) -> messages (rows for row families),
    must_reject: messages that had to be refused under any reason, categories, and a stall."""
    pinned: collections.Counter = field(default_factory=collections.Counter)
    must_reject: int = 0
    messages: int = 0
    replies: int = 0
    categories: collections.Counter = field(default_factory=collections.Counter)
    stalled: str = ""


@dataclass
class Flood:
    procs: dict
    metrics: dict
    urls: dict
    token: str
    logs: dict
    rss_before: dict = field(default_factory=dict)
    rss_after: dict = field(default_factory=dict)
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    sent: dict = field(default_factory=dict)
    oversized: dict = field(default_factory=dict)
    settings_before: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    dead: dict = field(default_factory=dict)


# -- sending ---------------------------------------------------------------------------------------
def drain(sock: zmq.Socket) -> int:
    n = 0
    while True:
        try:
            sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return n
        n += 1


def send_all(sock: zmq.Socket, shots: Iterable[H.Shot], sent: Sent, dealer: bool) -> None:
    """Send every shot without waiting for replies (drained as they come); a service that takes
    nothing for STALL_S seconds is recorded as stalled and the rest of its shots are skipped."""
    for shot in shots:
        waited_since = None
        while True:
            try:
                sock.send_multipart(shot.frames, zmq.NOBLOCK)
                break
            except zmq.Again:
                if dealer:
                    sent.replies += drain(sock)
                waited_since = waited_since or time.monotonic()
                if time.monotonic() - waited_since > STALL_S:
                    sent.stalled = (f"the service took no message for {STALL_S:.0f} s after {sent.messages} "
                                    f"(next: {shot.category})")
                    return
                time.sleep(0.0005)
        sent.messages += 1
        sent.categories[shot.category] += 1
        if isinstance(shot.expect, tuple):
            family = shot.expect[0]
            sent.pinned[shot.expect] += shot.rows if family in ROW_FAMILIES else 1
            if family not in ROW_FAMILIES:
                sent.must_reject += 1
        elif shot.expect == H.REJECT:
            sent.must_reject += 1
        if dealer and sent.messages % 8 == 0:
            sent.replies += drain(sock)


def capped(shots: Iterator[H.Shot], n: int) -> Iterator[H.Shot]:
    for i, shot in enumerate(shots):
        if i >= n:
            return
        yield shot


# -- the stack ---------------------------------------------------------------------------------------
def start_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(binary):
        pytest.fail("redis-server is not installed: `make setup` installs Debian's redis-server")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    import redis
    wait_for(lambda: redis.Redis(port=port).ping(), 10, what="redis-server")
    return proc, f"redis://127.0.0.1:{port}/0"


def endpoints(p: dict[str, int]) -> list[Endpoint]:
    tcp = lambda name: f"tcp://127.0.0.1:{p[name]}"  # noqa: E731
    eps = [Endpoint("replay_pull", "replay", zmq.PUSH, 32 << 20, 'tempest_replay_connections_dropped_total{socket="pull"}'),
           Endpoint("replay_router", "replay", zmq.DEALER, 64 << 20,
                    'tempest_replay_connections_dropped_total{socket="router"}'),
           Endpoint("expert", "expert", zmq.DEALER, 4 << 20, "tempest_expert_connections_dropped_total"),
           Endpoint("learner_inbox", "learner", zmq.PUSH, 2 << 20,
                    'tempest_learner_connections_dropped_total{socket="inbox"}'),
           Endpoint("learner_control", "learner", zmq.DEALER, 2 << 20,
                    'tempest_learner_connections_dropped_total{socket="control"}')]
    for ep, port in zip(eps, ("pull", "router", "expert", "episodes", "control")):
        ep.url = tcp(port)
    return eps


def scrape_all(f: Flood) -> dict[str, dict[str, float]]:
    return {s: scrape(f.metrics[s]) for s in SERVICES}


def fill_replay(url: str, rng: np.random.Generator) -> None:
    """FILL_ROWS real-looking rows (seq 0 .. FILL_ROWS-1): more than MIN_SIZE_TO_SAMPLE."""
    sender = TransitionSender(url)
    for i in range(FILL_ROWS // 32):
        sender.send(HR.transitions(rng, 32, STATE_DIM, stream=f"fill-{i}"))
    sender.close()


ENDPOINT_SERVICE = {"replay_pull": "replay", "replay_router": "replay", "expert": "expert",
                    "learner_inbox": "learner", "learner_control": "learner"}


def shortfalls(f: Flood, service: str, now: dict) -> list[str]:
    """What the service's counters do not account for (empty: everything is counted)."""
    before, after = f.before[service], now[service]
    pinned, must = collections.Counter(), 0
    for name, sent in f.sent.items():
        if ENDPOINT_SERVICE[name] == service:
            pinned.update(sent.pinned)
            must += sent.must_reject
    out = []
    for (family, reason), n in sorted(pinned.items()):
        a, b = reason_value(after, family, reason), reason_value(before, family, reason)
        if a is None:
            out.append(f'{family}{{reason="{reason}"}} is not exported (sent {n} such)')
        elif a - (b or 0) < n:
            out.append(f'{family}{{reason="{reason}"}} grew by {a - (b or 0):g}, sent {n} such')
    grew = sum(family_total(after, fam) - family_total(before, fam) for fam in MESSAGE_FAMILIES[service])
    if grew < must:
        out.append(f"its reject counters ({', '.join(MESSAGE_FAMILIES[service])}) grew by {grew:g} in all, "
                   f"{must} messages had to be refused")
    return out


def progress_key(f: Flood, now: dict) -> tuple:
    key = []
    for service in SERVICES:
        for fam in (*MESSAGE_FAMILIES[service], *PROGRESS[service]):
            key.append(family_total(now[service], fam))
    for fam in ROW_FAMILIES:
        key.append(family_total(now["replay"], fam))
    return tuple(key)


def settle(f: Flood, sockets: list[zmq.Socket], timeout: float = 90.0) -> dict:
    """Wait until every service has counted what it was sent, or its counters stop moving (3 s)."""
    deadline, last, still_since = time.monotonic() + timeout, None, time.monotonic()
    while True:
        for s in sockets:
            if s.type == zmq.DEALER:
                drain(s)
        now = scrape_all(f)
        if not any(shortfalls(f, s, now) for s in SERVICES):
            return now
        key = progress_key(f, now)
        if key != last:
            last, still_since = key, time.monotonic()
        elif time.monotonic() - still_since > 3.0 or time.monotonic() > deadline:
            return now
        time.sleep(0.5)


def send_oversized(f: Flood, ep: Endpoint, ctx: zmq.Context, count: int = 2) -> dict:
    """`count` messages of ep.oversize bytes on one socket kept open: each must cut the connection
    (counted) while the socket is still open; none may be answered."""
    sock = ctx.socket(ep.sock_type)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(ep.url)
    blob = b"\xc1" + bytes(ep.oversize)
    cut, answered = 0, 0
    try:
        for _ in range(count):
            start = scrape(f.metrics[ep.service]).get(ep.dropped)
            if start is None:
                return {"cut": 0, "sent": count, "answered": 0, "error": f"{ep.dropped} is not exported"}
            sock.send(blob)
            try:
                wait_for(lambda: scrape(f.metrics[ep.service]).get(ep.dropped, 0) > start, 5, 0.05)
                cut += 1
            except AssertionError:
                pass
            if ep.sock_type == zmq.DEALER:
                answered += drain(sock)
        if ep.sock_type == zmq.DEALER and sock.poll(300):
            answered += drain(sock)
    finally:
        sock.close(0)
    return {"cut": cut, "sent": count, "answered": answered, "error": ""}


@pytest.fixture(scope="module")
def flood(tmp_path_factory) -> Iterator[Flood]:
    tmp = tmp_path_factory.mktemp("fuzz")
    t_start = time.monotonic()
    redis_proc, redis_url = start_redis(tmp)
    p = {k: free_port() for k in ("pull", "router", "rmetrics", "expert", "emetrics", "episodes", "weights",
                                  "control", "lmetrics")}
    tcp = lambda name: f"tcp://127.0.0.1:{p[name]}"  # noqa: E731
    quiet = {"METRICS_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    ckpt = tmp / "checkpoints"
    logs = {s: tmp / f"{s}.log" for s in SERVICES}
    procs = {
        "replay": start_service("services.replay.main", {
            **quiet, "REDIS_URL": redis_url, "REPLAY_PULL_BIND": tcp("pull"), "REPLAY_BIND": tcp("router"),
            "METRICS_PORT": str(p["rmetrics"]), "STATE_DIM": str(STATE_DIM), "MIN_SIZE_TO_SAMPLE": str(MIN_SIZE),
            "REPLAY_CAPACITY": "100000", "SEED": "1",
            # sample replies unread by their (hostile) peers may hold this much by design (default
            # 512 MiB): kept well under RSS_BUDGET, so the memory check sees leaks, not the budget
            "REPLY_BYTES_BUDGET": str(REPLY_BYTES_BUDGET)}, logs["replay"]),
        "expert": start_service("services.expert.main", {
            **quiet, "EXPERT_BIND": tcp("expert"), "METRICS_PORT": str(p["emetrics"])}, logs["expert"]),
        "learner": start_service("services.learner.main", {
            **quiet, "REPLAY_ADDR": tcp("router"), "LEARNER_EPISODES_BIND": tcp("episodes"),
            "WEIGHTS_BIND": tcp("weights"), "CONTROL_BIND": tcp("control"), "METRICS_PORT": str(p["lmetrics"]),
            "STATE_DIM": str(STATE_DIM), "HIDDEN": "16,16", "DEVICE": "cpu", "CHECKPOINT_DIR": str(ckpt),
            "SEED": "0", "BATCH_SIZE": "32", "N_STEP": "3", "TRAINING_STEPS_PER_SAMPLE": "0.01"}, logs["learner"]),
    }
    metrics = {"replay": p["rmetrics"], "expert": p["emetrics"], "learner": p["lmetrics"]}
    ctx = zmq.Context()
    flood_sockets: list[zmq.Socket] = []
    try:
        for s in SERVICES:
            wait_for(lambda: scrape(metrics[s]), 90, what=f"the {s} service's /metrics")
        token = read_control_token(control_token_path({"CHECKPOINT_DIR": str(ckpt)}))
        f = Flood(procs, metrics, {e.name: e.url for e in endpoints(p)}, token, logs)
        eps = endpoints(p)
        rng = np.random.default_rng(SEED)

        # warm up: one well-formed request each, then the baseline
        control = ControlClient(tcp("control"), token=token, context=ctx)
        f.settings_before = control.get()
        expert = ExpertClient(tcp("expert"), ctx)
        assert expert.act(decode_ram(FIRST_LIVES[150:151]), timeout_ms=10_000) is not None
        expert.close()
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 2000)
        push.connect(tcp("episodes"))
        push.send(encode(HS.heartbeat("fuzz-warmup", 100)))
        push.close()
        f.rss_before = {s: rss(procs[s].pid) for s in SERVICES}
        f.before = scrape_all(f)
        f.seconds["start"] = time.monotonic() - t_start

        def run(ep: Endpoint, shots: Iterable[H.Shot]) -> None:
            t0 = time.monotonic()
            sock = ctx.socket(ep.sock_type)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 1000)
            sock.connect(ep.url)
            flood_sockets.append(sock)
            sent = f.sent.setdefault(ep.name, Sent())
            send_all(sock, shots, sent, ep.sock_type == zmq.DEALER)
            f.seconds[ep.name] = f.seconds.get(ep.name, 0.0) + time.monotonic() - t0

        by = {e.name: e for e in eps}
        # the replay's ROUTER first while it is empty (sample requests are refused or wait), then
        # the fill (seq 0..FILL_ROWS-1 are real rows: valid priority indices), then the rest
        n_router = FLOOD - 5
        run(by["replay_router"], capped(HR.replay_router_shots(rng, n_router, 0), n_router // 3))
        fill_replay(tcp("pull"), rng)
        wait_for(lambda: scrape(metrics["replay"]).get("tempest_replay_size", 0) >= FILL_ROWS, 30, what="the fill")
        # the learner's baseline once it trains (torch's first steps are not the flood's doing)
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 2000)
        push.connect(tcp("episodes"))
        push.send(encode(HS.heartbeat("fuzz-warmup", 60_000)))
        push.close()
        wait_for(lambda: scrape(metrics["learner"]).get("tempest_learner_steps_total", 0) >= 3, 60,
                 what="the learner's first training steps")
        f.rss_before["learner"], f.before["learner"] = rss(procs["learner"].pid), scrape(metrics["learner"])
        run(by["replay_router"], HR.replay_router_shots(rng, n_router - n_router // 3, FILL_ROWS))
        run(by["replay_router"], HR.replay_router_specials(rng, FILL_ROWS))
        specials = list(HR.replay_pull_specials(rng, STATE_DIM))
        run(by["replay_pull"], HR.replay_pull_shots(rng, FLOOD - len(specials), STATE_DIM))
        run(by["replay_pull"], iter(specials))
        del specials
        run(by["expert"], HS.expert_shots(rng, FLOOD, 4096))
        run(by["learner_inbox"], HS.learner_inbox_shots(rng, FLOOD - HS.LONG_WORKER_MESSAGES))
        run(by["learner_inbox"], HS.learner_inbox_specials(rng))
        run(by["learner_control"], HS.control_shots(rng, FLOOD, token))

        t0 = time.monotonic()
        now = settle(f, flood_sockets)
        f.seconds["settle"] = time.monotonic() - t0
        f.dead = {s: procs[s].poll() for s in SERVICES if procs[s].poll() is not None}
        # oversized messages last, each on its own socket, once the counters have settled
        t0 = time.monotonic()
        for ep in eps:
            if ep.service not in f.dead:
                f.oversized[ep.name] = send_oversized(f, ep, ctx)
        f.seconds["oversized"] = time.monotonic() - t0
        # the replay gives freed heap back every 5 s (tempest_common/heap.py): its resident size is
        # judged once that has run after the last large message
        time.sleep(HEAP_TRIM_WAIT_S)
        f.rss_after = {s: rss(procs[s].pid) for s in SERVICES if s not in f.dead}
        for s in flood_sockets:
            s.close(0)
        flood_sockets.clear()
        f.after = now
        control.close()
        yield f
    finally:
        for s in flood_sockets:
            s.close(0)
        for proc in procs.values():
            stop_process(proc)
        redis_proc.kill()
        redis_proc.wait(5)
        ctx.destroy(linger=0)


