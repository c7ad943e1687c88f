"""Delivery accounting in the replay (issue 15): the pure StreamAccounting from a table of named
cases, its bounds, and the service's counters in process (no Redis: nothing starts the writer).
The integration counterpart, tests/integration/test_replay_accounting.py, runs a real replay."""
from __future__ import annotations

import numpy as np
import pytest
import zmq
from prometheus_client import CollectorRegistry

from services.replay.accounting import (DUPLICATE, GAP, IN_ORDER, JOINED, NEW, OTHER_WORKERS, UNNUMBERED,
                                        StreamAccounting, WorkerLabels, seq_holes, tail)
from services.replay.config import load_replay_config
from services.replay.metrics import DROP_REASONS, ReplayMetrics
from services.replay.service import ReplayService
from tempest_common.messages import TransitionBatch
from tempest_common.wire import decode, encode

D = 8

# name: [(stream, first_row, rows) -> (outcome, missing, duplicate)], in arrival order
CASES = {
    "a stream from its row 0, in order": [
        (("a", 0, 10), (NEW, 0, 0)), (("a", 10, 5), (IN_ORDER, 0, 0)), (("a", 15, 1), (IN_ORDER, 0, 0))],
    "a batch lost in between: its rows missing": [
        (("a", 0, 10), (NEW, 0, 0)), (("a", 20, 10), (GAP, 10, 0)), (("a", 30, 4), (IN_ORDER, 0, 0))],
    "a batch repeated: all its rows duplicate, the stream does not move back": [
        (("a", 0, 10), (NEW, 0, 0)), (("a", 10, 10), (IN_ORDER, 0, 0)), (("a", 10, 10), (DUPLICATE, 0, 10)),
        (("a", 20, 3), (IN_ORDER, 0, 0))],
    "a step back to the stream's start": [
        (("a", 0, 10), (NEW, 0, 0)), (("a", 10, 10), (IN_ORDER, 0, 0)), (("a", 0, 5), (DUPLICATE, 0, 5)),
        (("a", 20, 1), (IN_ORDER, 0, 0))],
    "a batch overlapping the last: its head duplicate, its tail new": [
        (("a", 0, 10), (NEW, 0, 0)), (("a", 6, 10), (DUPLICATE, 0, 4)), (("a", 16, 2), (IN_ORDER, 0, 0))],
    "a late batch after a gap counted its rows missing: duplicate (counted once, as missing)": [
        (("a", 0, 10), (NEW, 0, 0)), (("a", 20, 10), (GAP, 10, 0)), (("a", 10, 10), (DUPLICATE, 0, 10))],
    "a stream first seen midway (begun before this replay knew it)": [
        (("a", 500, 10), (JOINED, 0, 0)), (("a", 510, 10), (IN_ORDER, 0, 0))],
    "streams interleave, each judged on its own numbers": [
        (("a", 0, 10), (NEW, 0, 0)), (("b", 0, 7), (NEW, 0, 0)), (("a", 10, 10), (IN_ORDER, 0, 0)),
        (("b", 9, 1), (GAP, 2, 0)), (("a", 20, 1), (IN_ORDER, 0, 0))],
    "schema 1 (first_row -1): not numbered, not accounted, the stream untouched": [
        (("a", 0, 10), (NEW, 0, 0)), (("a", -1, 10), (UNNUMBERED, 0, 0)), (("a", 10, 1), (IN_ORDER, 0, 0))],
    "an empty batch in order moves nothing": [
        (("a", 0, 4), (NEW, 0, 0)), (("a", 4, 0), (IN_ORDER, 0, 0)), (("a", 4, 2), (IN_ORDER, 0, 0))],
    "the largest row number": [(("a", 2 ** 53, 0), (JOINED, 0, 0)), (("a", 2 ** 53, 1), (IN_ORDER, 0, 0))],
}


@pytest.mark.parametrize("name", list(CASES))
def test_stream_accounting(name):
    acc = StreamAccounting()
    for (stream, first_row, rows), want in CASES[name]:
        v = acc.observe(stream, first_row, rows)
        assert (v.outcome, v.missing, v.duplicate) == want, (stream, first_row, rows)
        assert v.missing_reason == "gap"


def test_streams_are_bounded_and_a_forgotten_one_joins_again():
    acc = StreamAccounting(max_streams=3)
    for s in "abc":
        acc.observe(s, 0, 10)
    acc.observe("a", 10, 10)          # a is now the most recent: b is the least
    acc.observe("d", 0, 10)
    assert len(acc) == 3 and acc.expected("b") is None and acc.expected("a") == 20
    assert acc.observe("b", 10, 5).outcome == JOINED   # judged from here on, its earlier rows not again
    assert acc.observe("b", 16, 5).missing == 1


def test_after_a_restore_the_first_gap_is_a_restart_gap():
    """Streams rebuilt from Redis: the first gap each shows live is what the last replay process
    (or Redis) did not keep; later gaps, and streams seen live first, are ordinary gaps."""
    acc = StreamAccounting()
    for s, first, rows in (("a", 0, 10), ("b", 0, 10), ("c", 0, 10)):
        acc.observe(s, first, rows)
    acc.mark_restored()
    v = acc.observe("a", 15, 5)
    assert (v.outcome, v.missing, v.missing_reason) == (GAP, 5, "restart")
    assert acc.observe("a", 30, 5).missing_reason == "gap"
    assert acc.observe("b", 10, 5).outcome == IN_ORDER       # nothing lost across the restart...
    assert acc.observe("b", 20, 5).missing_reason == "gap"   # ...so a later gap is an ordinary one
    assert acc.observe("new", 3, 5).outcome == JOINED


def test_seq_holes():
    assert seq_holes([]) == 0 and seq_holes([(0, 10)]) == 0
    assert seq_holes([(0, 10), (10, 5), (15, 5)]) == 0
    assert seq_holes([(0, 10), (14, 6), (20, 1), (31, 1)]) == 4 + 10


def test_worker_labels_are_capped():
    labels = WorkerLabels(limit=2)
    assert [labels(w) for w in ("w0", "w1", "w2", "w0", "w3")] == ["w0", "w1", OTHER_WORKERS, "w0", OTHER_WORKERS]


def batch(first_row: int, rows: int, stream: str = "s", worker: str = "w", state=None) -> TransitionBatch:
    steps = np.arange(max(first_row, 0), max(first_row, 0) + rows, dtype=np.int32)
    z = lambda dt: np.zeros(rows, dt)  # noqa: E731
    return TransitionBatch(stream, worker, z(np.int64), steps, z(np.uint8), z(np.int16), z(np.float32),
                           z(np.float32), z(bool), z(bool),
                           np.full((rows, D), 0.5, np.float16) if state is None else state, first_row=first_row)


def test_tail_drops_the_head_rows_and_moves_first_row():
    b = batch(10, 6)
    t = tail(b, 4)
    assert t.first_row == 14 and t.num_rows() == 2 and list(t.step) == [14, 15] and t.stream_id == "s"
    assert decode(encode(t), expect=TransitionBatch).first_row == 14


@pytest.fixture()
def service():
    ctx = zmq.Context()
    registry = CollectorRegistry()
    cfg = load_replay_config({"STATE_DIM": str(D), "REPLAY_CAPACITY": "1000", "SEED": "1"})
    svc = ReplayService(cfg, ReplayMetrics(registry), ctx)
    svc.registry = registry
    yield svc
    svc.pull.close(0)
    svc.router.close(0)
    ctx.term()


def count(svc, name: str, **labels) -> float:
    v = svc.registry.get_sample_value(f"tempest_replay_{name}", labels)
    assert v is not None, f"{name}{labels} does not exist"
    return v


def test_service_counts_every_row_once(service):
    """received = stored + dropped by reason; numbers never received are missing; a duplicate
    is never stored twice (a part-duplicate's new tail is stored)."""
    sent = [batch(0, 10), batch(10, 10),                 # in order
            batch(30, 10),                               # 20..29 lost on the way
            batch(30, 10),                               # repeated
            batch(35, 10),                               # overlaps: 35..39 duplicate, 40..44 new
            batch(45, 5, state=np.full((5, D), np.inf, np.float16)),   # nonfinite
            batch(50, 5, state=np.zeros((5, D + 1), np.float16)),      # wrong STATE_DIM
            batch(55, 5, worker="w2", stream="t"),       # another worker, its stream joined midway
            batch(-1, 3, stream="old")]                  # schema 1: counted, not numbered
    for b in sent:
        service.insert_payload(encode(b))
    w = {"worker": "w"}
    dropped = {r: count(service, "transitions_dropped_total", reason=r, **w) for r in DROP_REASONS}
    assert dropped == {"duplicate": 15, "malformed": 5, "nonfinite": 5}
    assert count(service, "transitions_missing_total", reason="gap", **w) == 10
    assert count(service, "transitions_missing_total", reason="restart", **w) == 0
    assert count(service, "transitions_received_total", **w) == 10 + 10 + 10 + 10 + 10 + 5 + 5 + 3
    assert count(service, "transitions_stored_total", **w) == 10 + 10 + 10 + 5 + 3
    assert count(service, "transitions_received_total", **w) == \
        count(service, "transitions_stored_total", **w) + sum(dropped.values())
    assert count(service, "transitions_stored_total", worker="w2") == 5
    assert service.mirror.size == count(service, "inserted_total") == 43
    # the stored rows are each row once, the part-duplicate's tail with its own steps
    steps = sorted(service.mirror.step[:service.mirror.size].tolist())
    assert steps == sorted([*range(0, 20), *range(30, 45), *range(55, 60), 0, 1, 2])
    outcomes = {o: count(service, "stream_batches_total", outcome=o)
                for o in ("in_order", "gap", "duplicate", "new", "joined", "unnumbered")}
    assert outcomes == {"in_order": 3, "gap": 1, "duplicate": 2, "new": 1, "joined": 1, "unnumbered": 1}
