"""The replay's Redis copy keeps streams continuous (issue 15, item 2): a retried write does not
duplicate a chunk, a failed group keeps its order, and the restore sorts, de-duplicates and breaks
stream links across chunks it cannot read.  A real redis-server; the writer and the restore run in
process (no replay process).  Sampled rows are checked against the brute force of
tests/unit/test_replay_continuity.py."""
from __future__ import annotations

import logging
from collections import deque

import numpy as np
import pytest
import redis
import zmq
from prometheus_client import CollectorRegistry

from services.replay.config import load_replay_config
from services.replay.metrics import ReplayMetrics
from services.replay.service import ReplayService
from services.replay.storage import ChunkStore
from tempest_common.wire import encode
from tests.conftest import wait_for
from tests.unit.test_replay_continuity import D, Reference, check_samples, make_batch, rows

pytestmark = pytest.mark.integration
P = "t:replay"


def chunk(seq: int, rows_: int, stream: int = 0, first_step: int = 0, end: str | None = None) -> tuple:
    part = rows(stream, 0, range(first_step, first_step + rows_), end=end)
    return seq, rows_, encode(make_batch(f"s{stream}", part)), part


def listed(r: redis.Redis) -> list[str]:
    return [e.decode() for e in r.lrange(f"{P}:chunks", 0, -1)]


def restored(url: str) -> ReplayService:
    """A replay service rebuilt from Redis (its sockets never bound)."""
    cfg = load_replay_config({"REDIS_URL": url, "REPLAY_REDIS_PREFIX": P, "STATE_DIM": str(D),
                              "REPLAY_CAPACITY": "1000", "SEED": "1"})
    ctx = zmq.Context()
    service = ReplayService(cfg, ReplayMetrics(CollectorRegistry()), ctx)
    try:
        service.restore()
    finally:
        service.pull.close(0)
        service.router.close(0)
        ctx.term()
    return service


@pytest.mark.parametrize("retried", [["c2"], ["c2", "c3"]], ids=["same group", "grown group"])
def test_a_retried_write_that_landed_is_not_listed_twice(redis_server, retried):
    """The group reached Redis but its reply was lost (a timeout): the writer retries it, alone or
    with a chunk that arrived meanwhile.  Each chunk is listed once, counted once, and the eviction
    that came with it is not done twice (it once trimmed a live chunk's entry, leaking its payload)."""
    r = redis.Redis.from_url(redis_server)
    store = ChunkStore(redis_server, P, capacity=100, max_buffered=100)
    c = {f"c{i}": chunk(40 * i, 40, first_step=40 * i)[:3] for i in range(4)}
    store._write([c["c0"], c["c1"]])
    before = deque(store._chunks), store._rows
    store._write([c["c2"]])                       # lands: c0 evicted (100-row ring)...
    store._chunks, store._rows = before           # ...but the writer never heard back
    store._write([c[k] for k in retried])
    want = ["40:40", "80:40"] if retried == ["c2"] else ["80:40", "120:40"]
    assert listed(r) == want
    assert sorted(k.decode() for k in r.keys(f"{P}:chunk:*")) == sorted(f"{P}:chunk:{e.split(':')[0]}" for e in want)
    assert int(r.get(f"{P}:rows")) == 80
    assert int(r.get(f"{P}:inserted_total")) == 40 * (2 + len(retried))
    assert int(r.get(f"{P}:next_seq")) == 40 * (2 + len(retried))


def test_a_failed_group_is_retried_in_order_and_restores(redis_server):
    """100 chunks queued, the first write of 64 fails: the group is retried ahead of the 36 that
    waited behind it (it once went back to the queue's end), so Redis lists them in seq order."""
    r = redis.Redis.from_url(redis_server)
    store = ChunkStore(redis_server, P, capacity=1000, max_buffered=1000)
    ref = Reference()
    for i in range(100):
        seq, n, payload, part = chunk(5 * i, 5, first_step=5 * i, end="terminal" if i == 99 else None)
        store.put(seq, n, payload)
        ref.add(part)
    real, calls = store._write, []

    def fail_once(group):
        calls.append(len(group))
        if len(calls) == 1:
            raise redis.ConnectionError("Redis went away")
        real(group)
    store._write = fail_once
    store.start()
    try:
        wait_for(lambda: r.llen(f"{P}:chunks") == 100 and store.buffered == 0, 20, what="every chunk written")
    finally:
        store.stop()
    assert calls[0] == 64
    assert listed(r) == [f"{5 * i}:5" for i in range(100)]
    service = restored(redis_server)
    assert service.mirror.size == 500
    assert check_samples(service.mirror, ref, 3, draws=20_000) == ref.complete(3)


def test_restore_sorts_and_drops_duplicates(redis_server):
    """A list as the old writer could leave it: out of order and with a chunk twice.  The mirror
    holds each row once, linked forwards only, and the list is rewritten clean."""
    r = redis.Redis.from_url(redis_server)
    ref = Reference()
    chunks = [chunk(10 * i, 10, first_step=10 * i, end="terminal" if i == 2 else None) for i in range(3)]
    for seq, _, payload, part in chunks:
        r.set(f"{P}:chunk:{seq}", payload)
        ref.add(part)
    r.rpush(f"{P}:chunks", "10:10", "0:10", "20:10", "10:10")
    r.set(f"{P}:next_seq", 30)
    r.set(f"{P}:rows", 40)
    service = restored(redis_server)
    assert service.mirror.size == 30
    assert check_samples(service.mirror, ref, 3) == ref.complete(3)
    assert listed(r) == ["0:10", "10:10", "20:10"] and int(r.get(f"{P}:rows")) == 30


def test_an_unreadable_chunk_breaks_the_links_across_it(redis_server, caplog):
    """Three streams, each with a middle chunk the restore cannot use: bytes that are not a
    message, a listed chunk whose payload is gone, states beyond float16.  No window spans the
    hole, and one line says how many chunks were skipped."""
    r = redis.Redis.from_url(redis_server)
    ref, entries = Reference(), []
    for s in range(3):
        for i in range(3):
            seq, n, payload, part = chunk(30 * s + 10 * i, 10, stream=s, first_step=10 * i,
                                          end="terminal" if i == 2 else None)
            if i == 1:
                if s == 0:
                    payload = b"\xc1 not msgpack"
                elif s == 1:
                    payload = None
                else:
                    huge = make_batch("s2", {**part, "state": part["state"].astype(np.float32) * 0 + 1e6})
                    payload = encode(huge)
            else:
                ref.add(part)
            if payload is not None:
                r.set(f"{P}:chunk:{seq}", payload)
            entries.append(f"{seq}:{n}")
    r.rpush(f"{P}:chunks", *entries)
    r.set(f"{P}:next_seq", 90)
    with caplog.at_level(logging.ERROR, logger="replay.service"):
        service = restored(redis_server)
    assert service.mirror.size == 60
    for n in (1, 3):
        assert check_samples(service.mirror, ref, n, seed=n) == ref.complete(n)
    summary = [m for m in caplog.messages if "unreadable or missing" in m]
    assert len(summary) == 1 and "3 of 9 chunks" in summary[0], caplog.messages
