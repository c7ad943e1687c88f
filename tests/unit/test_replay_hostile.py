"""Hostile input to the replay, in process (issue 14): the service's handlers driven directly,
requests over inproc ZeroMQ, no Redis (nothing here starts the writer).  The integration
counterpart, tests/integration/test_replay_hostile.py, covers what needs TCP."""
from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import time

import numpy as np
import pytest
import zmq
from prometheus_client import CollectorRegistry

from services.replay.config import load_replay_config
from services.replay.inplace import InPlace
from services.replay.limits import (MAX_PARKED, MAX_PRIORITY_ROWS, MAX_SAMPLE_ROWS, MAX_WAIT_S, PRIORITY_CAP,
                                    _zero_batch, largest_priority_update_bytes, largest_sample_reply_bytes,
                                    largest_transition_batch_bytes)
from services.replay.metrics import ReplayMetrics
from services.replay.mirror import ReplayMirror
from services.replay.service import ReplayService
from tempest_common.messages import MAX_BATCH_ROWS, PriorityUpdate, SampleReply, SampleRequest, TransitionBatch
from tempest_common.socket_limits import max_encoded_size
from tempest_common.wire import decode, encode

D = 8
_ADDRESSES = itertools.count()


def batch(rows: int, stream: str = "s", state_dtype=np.float16, first_step: int = 0) -> TransitionBatch:
    steps = np.arange(first_step, first_step + rows, dtype=np.int32)
    return TransitionBatch(stream, "w", np.zeros(rows, np.int64), steps,
                           np.zeros(rows, np.uint8), np.zeros(rows, np.int16), np.ones(rows, np.float32),
                           np.zeros(rows, np.float32), np.zeros(rows, bool), np.zeros(rows, bool),
                           np.zeros((rows, D), state_dtype))


@pytest.fixture()
def replay():
    """(service, dealer, metric): a ReplayService whose ROUTER listens on inproc, a DEALER
    connected to it, and metric(name, **labels) reading the service's private registry."""
    ctx = zmq.Context()
    registry = CollectorRegistry()
    made = []

    def make(**env):
        cfg = load_replay_config({"STATE_DIM": str(D), "REPLAY_CAPACITY": "1000", "MIN_SIZE_TO_SAMPLE": "10",
                                  "SEED": "1", **{k: str(v) for k, v in env.items()}})
        service = ReplayService(cfg, ReplayMetrics(registry), ctx)
        address = f"inproc://replay-{next(_ADDRESSES)}"
        service.router.bind(address)
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(address)
        made.extend([service.pull, service.router, dealer])
        return service, dealer

    def metric(name: str, **labels) -> float:
        return registry.get_sample_value(name, labels)

    yield make, metric
    for sock in made:
        sock.close(0)
    ctx.term()


def drain(service: ReplayService, dealer: zmq.Socket, expect: int, timeout_s: float = 5.0) -> list:
    """Serve requests until `expect` replies are back; returns them decoded."""
    replies, deadline = [], time.monotonic() + timeout_s
    while len(replies) < expect and time.monotonic() < deadline:
        service._drain_requests()
        while dealer.poll(10):
            replies.append(decode(dealer.recv(), expect=None))
    return replies


# -- 1. finiteness in the stored dtype ----------------------------------------------------------
def test_state_beyond_float16_is_dropped_as_nonfinite_and_breaks_the_stream(replay):
    make, metric = replay
    service, _ = make()
    service.insert_payload(encode(batch(5)))
    huge = batch(5, state_dtype=np.float32, first_step=5)
    huge.state[2, 3] = 1e6                    # finite as float32 on the wire; inf as float16
    service.insert_payload(encode(huge))
    assert service.mirror.size == 5, "the batch whose states overflow float16 is not stored"
    assert np.isfinite(service.mirror.state.astype(np.float32)).all()
    assert metric("tempest_replay_malformed_total", reason="nonfinite") == 1
    service.insert_payload(encode(batch(5, first_step=10)))
    assert service.mirror.next[4] == -1, "no n-step window bridges the dropped batch"


def test_float16_states_that_fit_are_stored(replay):
    make, metric = replay
    service, _ = make()
    fits = batch(4, state_dtype=np.float32)
    fits.state[:] = 65000.0                   # just below float16's largest, 65504
    service.insert_payload(encode(fits))
    assert service.mirror.size == 4 and metric("tempest_replay_malformed_total", reason="nonfinite") == 0


# -- 2. parked requests: bounded, and their wait clamped -----------------------------------------
def test_parked_requests_are_bounded_and_waits_clamped(replay):
    make, metric = replay
    service, dealer = make(MIN_SIZE_TO_SAMPLE=500)   # empty: every request waits ("too_small")
    extra = 44
    for rid in range(MAX_PARKED + extra):
        dealer.send(encode(SampleRequest(rid, 32, 1, 0.9, False, 0.4, math.inf)))
    t0 = time.monotonic()
    replies = drain(service, dealer, extra)
    assert len(service._parked) == MAX_PARKED
    assert len(replies) == extra and all(r.error.startswith("busy: ") for r in replies)
    assert metric("tempest_replay_refused_total", reason="busy") == extra
    assert all(deadline <= t0 + MAX_WAIT_S + 5 for deadline, _, _ in service._parked), "inf waits 60 s, no more"
    # the parked requests are served once the replay holds enough
    for i in range(5):
        service.insert_payload(encode(batch(100, stream=f"s{i}")))
    service._serve_parked()
    served = drain(service, dealer, MAX_PARKED)
    assert len(served) == MAX_PARKED and all(r.error is None and r.state.shape == (32, D) for r in served)


def test_a_nan_wait_is_a_bad_request(replay):
    make, metric = replay
    service, dealer = make(MIN_SIZE_TO_SAMPLE=500)
    dealer.send(encode(SampleRequest(1, 32, 1, 0.9, False, 0.4, math.nan)))
    [reply] = drain(service, dealer, 1)
    assert reply.error.startswith("bad_request: ") and not service._parked


# -- 3. batch sizes and hostile priorities ------------------------------------------------------
def test_sample_requests_beyond_the_learners_largest_batch_are_refused(replay):
    make, metric = replay
    service, dealer = make()
    service.insert_payload(encode(batch(100)))
    dealer.send(encode(SampleRequest(1, MAX_SAMPLE_ROWS + 1, 1, 0.9, False, 0.4, 0.0)))
    dealer.send(encode(SampleRequest(2, MAX_SAMPLE_ROWS, 1, 0.9, False, 0.4, 0.0)))
    first, second = drain(service, dealer, 2)
    assert first.error.startswith("bad_request: ") and second.error is None
    assert second.state.shape == (MAX_SAMPLE_ROWS, D)


def test_oversized_priority_update_is_refused(replay):
    make, metric = replay
    service, dealer = make()
    service.insert_payload(encode(batch(100)))
    rows = MAX_PRIORITY_ROWS + 1
    dealer.send(encode(PriorityUpdate(7, np.zeros(rows, np.uint64), np.ones(rows, np.float32))))
    [ack] = drain(service, dealer, 1)
    assert ack.request_id == 7 and ack.error.startswith("too_large: ")
    assert metric("tempest_replay_refused_total", reason="too_large") == 1
    assert service.mirror.priority_count == 0


HOSTILE_INDEX = np.array([2**64 - 1, 2**63, 2**63 - 1, 50, 99, 1, 2, 3, 4, 5, 9], np.uint64)
HOSTILE_PRIORITY = np.array([5.0, 5.0, 5.0, 5.0, 5.0, np.nan, np.inf, -1.0, 0.0, 1e38, 2.0], np.float32)


def test_hostile_priorities_never_corrupt_the_sum_tree():
    m = ReplayMirror(100, D, np.float16, alpha=1.0)
    last = np.arange(10) == 9
    m.insert(dataclasses.replace(batch(10), truncated=last, action=np.where(last, -1, 0).astype(np.int16)))
    leaves_before = m.tree.get(np.arange(100)).copy()
    ignored = m.update_priorities(HOSTILE_INDEX, HOSTILE_PRIORITY)
    leaves = m.tree.get(np.arange(100))
    # 2**64-1 would wrap to -1, the seq of an empty slot (99); 9 is bootstrap-only
    assert np.all(leaves[10:] == 0), "empty slots keep a zero priority"
    assert leaves[9] == 0 and leaves[5] == PRIORITY_CAP and m.max_priority == PRIORITY_CAP
    assert np.array_equal(leaves[1:5], leaves_before[1:5]), "NaN, inf, negative and 0 are ignored"
    assert np.isfinite(m.tree.total) and m.tree.total == pytest.approx(leaves.sum())
    assert ignored == {"stale": 0, "bad_index": 6, "nonfinite": 2, "nonpositive": 2, "clamped": 1}
    rng = np.random.default_rng(0)
    drawn = m.sample(500, 1, 0.9, True, 0.4, rng)
    assert np.all(drawn.index < 9) and np.isfinite(drawn.weight).all()


def test_hostile_priorities_over_the_wire_are_counted(replay):
    make, metric = replay
    service, dealer = make()
    service.insert_payload(encode(batch(10)))
    dealer.send(encode(PriorityUpdate(3, HOSTILE_INDEX, HOSTILE_PRIORITY)))
    [ack] = drain(service, dealer, 1)
    assert ack.request_id == 3 and ack.error is None
    # 2**63-1, 50, 99 and 9 were never issued (10 rows, none truncated here): bad_index
    expected = {"bad_index": 5, "nonfinite": 2, "nonpositive": 2, "clamped": 1}
    assert {r: metric("tempest_replay_bad_priorities_total", reason=r) for r in expected} == expected
    assert metric("tempest_replay_stale_priorities_total") == 0


# -- 4. replies ZeroMQ still holds -------------------------------------------------------------
def test_samples_are_refused_busy_while_unread_replies_exceed_the_budget(replay):
    make, metric = replay
    service, dealer = make(REPLY_BYTES_BUDGET=1 << 20)
    service.insert_payload(encode(batch(100)))
    reply_bytes = 4096 * (2 * 2 * D + 8 + 2 + 4 + 4 + 4 + 1)   # ~225 KB each
    for rid in range(20):
        dealer.send(encode(SampleRequest(rid, 4096, 1, 0.9, False, 0.4, 0.0)))
    service._drain_requests()                 # nobody reads: inproc keeps every reply (and its buffer)
    served = metric("tempest_replay_samples_total") // 4096
    assert served == -(-(1 << 20) // reply_bytes), "served until the budget, then refused"
    assert metric("tempest_replay_refused_total", reason="busy") == 20 - served
    service._update_gauges()
    assert metric("tempest_replay_reply_bytes_in_flight") >= 1 << 20
    replies = drain(service, dealer, 20)      # read: ZeroMQ lets go of the replies
    assert sum(r.error is None for r in replies) == served
    dealer.send(encode(SampleRequest(99, 4096, 1, 0.9, False, 0.4, 0.0)))
    [reply] = drain(service, dealer, 1)
    assert reply.error is None
    drain(service, dealer, 0)
    service._update_gauges()
    assert metric("tempest_replay_reply_bytes_in_flight") == 0


# -- 5. message size limits ------------------------------------------------------------------------
def test_size_limits_hold_the_largest_legitimate_messages():
    for state_dim in (8, 200):
        exact = max_encoded_size(_zero_batch(state_dim)(MAX_BATCH_ROWS))
        assert exact <= largest_transition_batch_bytes(state_dim) <= exact * 1.01
    exact = max_encoded_size(PriorityUpdate(-2**63, np.zeros(MAX_PRIORITY_ROWS, np.uint64),
                                            np.zeros(MAX_PRIORITY_ROWS, np.float32)))
    assert exact <= largest_priority_update_bytes() <= exact * 1.01


def test_sample_reply_limit_holds_the_largest_reply_the_service_builds():
    """The client's limit against a reply built as the service builds it (every field of
    sample_layout, expert labels included), float32 states: within 1%, so a field left out of
    largest_sample_reply_bytes (2 of ~90 bytes a row here) shows."""
    rows = MAX_SAMPLE_ROWS
    out = InPlace(SampleReply, {"request_id": -2**63, "error": None},
                  ReplayMirror(1000, D, np.float32).sample_layout(rows))
    for a in out.arrays.values():
        a[...] = 0
    exact = max_encoded_size(decode(bytes(out.finish()), expect=SampleReply))
    assert exact <= largest_sample_reply_bytes(D) <= exact * 1.01


def test_sockets_carry_the_limits(replay):
    make, _ = replay
    service, _ = make()
    assert service.pull.getsockopt(zmq.MAXMSGSIZE) == largest_transition_batch_bytes(D)
    assert service.router.getsockopt(zmq.MAXMSGSIZE) == largest_priority_update_bytes()


# -- 6. every reject counted, a flood logged in a few lines ----------------------------------------
def test_a_flood_of_garbage_is_counted_but_logged_once(replay, caplog):
    make, metric = replay
    service, _ = make()
    with caplog.at_level(logging.WARNING, logger="replay.service"):
        for _ in range(1000):
            service.insert_payload(b"garbage")
    assert metric("tempest_replay_malformed_total", reason="not_msgpack") == 1000
    assert len(caplog.records) == 1


def test_reject_reasons_show_as_zero_before_any_reject():
    registry = CollectorRegistry()
    ReplayMetrics(registry)
    for name, label, values in (("tempest_replay_refused_total", "reason", ("busy", "too_large", "bad_request")),
                                ("tempest_replay_bad_priorities_total", "reason",
                                 ("bad_index", "nonfinite", "nonpositive", "clamped")),
                                ("tempest_replay_connections_dropped_total", "socket", ("pull", "router"))):
        for value in values:
            assert registry.get_sample_value(name, {label: value}) == 0


def test_made_up_stream_ids_do_not_grow_the_link_table_without_bound():
    """Every stream id was remembered forever (a flood of made-up ids grew the replay by ~135 MB):
    only the MAX_STREAMS most recent are kept, and a forgotten stream's next batch simply starts a
    new chain, while a live stream keeps linking."""
    from services.replay.mirror import MAX_STREAMS
    mirror = ReplayMirror(100, D, np.dtype(np.float16), 0.6)
    live = batch(2, stream="live")
    mirror.insert(live)
    for i in range(MAX_STREAMS + 50):
        mirror.insert(batch(1, stream=f"made-up-{i}"))
        if i % 1000 == 0:
            mirror.insert(batch(1, stream="live", first_step=2 + i // 1000))   # keeps linking as it goes
    assert len(mirror._stream_last) == MAX_STREAMS
    assert "made-up-0" not in mirror._stream_last and "live" in mirror._stream_last
