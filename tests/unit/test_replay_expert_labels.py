"""Expert labels (TransitionBatch.expert_action, schema 2) through the replay, in process: each
sampled row carries the label of exactly the row its index names, through the mirror's ring
(wrapping included) and the service's in-place reply; a schema-1 batch (no labels) gets the
derived ones.  The Redis round trip (restart, stored schema-1 chunks) is in
tests/integration/test_replay_expert_labels.py."""
from __future__ import annotations

import dataclasses

import msgpack
import numpy as np
import pytest

from services.replay.mirror import ReplayMirror
from tempest_common.actions import NUM_ACTIONS
from tempest_common.messages import (ACTOR_EXPERT, ACTOR_NETWORK, ACTOR_RANDOM, NO_ACTION, SampleRequest,
                                     TransitionBatch, expert_labels)
from tempest_common.wire import encode
from tests.unit.test_replay_hostile import D, drain, replay  # noqa: F401  (replay: the fixture)


def labelled_stream(stream: str, rows: int, rng: np.random.Generator) -> TransitionBatch:
    """`rows` rows of terminal or truncated episodes (3..30 steps) by every kind of actor, as a
    worker with EXPERT_LABELS sends them: expert rows labelled with their action, most network and
    a few random rows with an expert answer (any action), the rest NO_ACTION (not asked, or no
    answer in time)."""
    ep, step = np.empty(rows, np.int64), np.empty(rows, np.int32)
    terminal, truncated = np.zeros(rows, bool), np.zeros(rows, bool)
    pos, e = 0, 0
    while pos < rows:
        end = min(rows, pos + int(rng.integers(3, 31)))
        ep[pos:end], step[pos:end] = e, np.arange(end - pos)
        (truncated if rng.random() < 0.3 else terminal)[end - 1] = True
        pos, e = end, e + 1
    actor = rng.choice(np.array([ACTOR_EXPERT, ACTOR_NETWORK, ACTOR_RANDOM], np.uint8), rows, p=[0.3, 0.6, 0.1])
    action = np.where(truncated, NO_ACTION, rng.integers(0, NUM_ACTIONS, rows)).astype(np.int16)
    asked = (actor != ACTOR_EXPERT) & ~truncated & (rng.random(rows) < np.where(actor == ACTOR_NETWORK, 0.7, 0.2))
    label = np.where(asked, rng.integers(0, NUM_ACTIONS, rows), expert_labels(actor, action)).astype(np.int16)
    state = rng.random((rows, D)).astype(np.float16)
    return TransitionBatch(stream, "w", ep, step, actor, action, rng.random(rows).astype(np.float32),
                           np.zeros(rows, np.float32), terminal, truncated, state, label)


def interleaved_batches(rng: np.random.Generator, streams: int = 3, rows: int = 500) -> list[TransitionBatch]:
    """Each stream cut into batches of 1..60 rows, in order; the streams interleaved at random."""
    queues = []
    for s in range(streams):
        whole, cuts = labelled_stream(f"s{s}", rows, rng), [0]
        while cuts[-1] < rows:
            cuts.append(min(rows, cuts[-1] + int(rng.integers(1, 61))))
        queues.append([slice_batch(whole, a, b) for a, b in zip(cuts, cuts[1:])])
    out = []
    while any(queues):
        live = [q for q in queues if q]
        out.append(live[rng.integers(len(live))].pop(0))
    return out


def slice_batch(batch: TransitionBatch, a: int, b: int) -> TransitionBatch:
    """Rows a..b of a batch: every per-row field sliced."""
    return dataclasses.replace(batch, **{f.name: getattr(batch, f.name)[a:b] for f in dataclasses.fields(batch)
                                         if f.metadata.get("rows")})


def schema1_bytes(batch: TransitionBatch) -> bytes:
    """What a schema-1 sender wrote: the message without expert_action, version 1."""
    obj = msgpack.unpackb(encode(batch), raw=False)
    obj["v"] = 1
    del obj["expert_action"], obj["first_row"]   # schema 1 had neither (wire.UPGRADES)
    return msgpack.packb(obj, use_bin_type=True)


def check_rows(reply, label: dict[int, int], action: dict[int, int]) -> None:
    index = reply.index.astype(np.int64)
    np.testing.assert_array_equal(reply.expert_action, [label[i] for i in index])
    np.testing.assert_array_equal(reply.action, [action[i] for i in index])


@pytest.mark.parametrize("prioritized", [False, True])
def test_mirror_samples_carry_the_label_of_the_row_sampled(prioritized):
    rng = np.random.default_rng(5)
    m = ReplayMirror(700, D)                 # 1500 rows: the ring wraps, runs straddle its end
    label, action = {}, {}
    for b in interleaved_batches(rng):
        seq = m.insert(b)
        label.update(zip(range(seq, seq + b.num_rows()), b.expert_action.tolist()))
        action.update(zip(range(seq, seq + b.num_rows()), b.action.tolist()))
    assert m.next_seq == 1500
    if prioritized:                          # uneven priorities: the tree, not the ring, picks rows
        seq, _ = m.priority_snapshot()
        m.update_priorities(seq.astype(np.uint64), rng.random(len(seq)) * 10 + 0.1)
    seen = set()
    for n in (1, 3):
        s = m.sample(3000, n, 0.9, prioritized, 0.4, rng)
        assert s.expert_action.dtype == np.int16 and s.index.min() >= 1500 - 700   # live rows only
        check_rows(s, label, action)
        seen.update(zip(s.actor.tolist(), (s.expert_action >= 0).tolist()))
    # every kind of row was drawn: expert rows, labelled and unlabelled network rows
    assert {(ACTOR_EXPERT, True), (ACTOR_NETWORK, True), (ACTOR_NETWORK, False)} <= seen


def test_service_replies_carry_labels_and_schema1_batches_get_derived_ones(replay):
    make, metric = replay
    service, dealer = make(MIN_SIZE_TO_SAMPLE=50)
    rng = np.random.default_rng(9)
    label, action, old_rows = {}, {}, set()
    batches = interleaved_batches(rng, streams=2, rows=300)
    for i, b in enumerate(batches):
        old = i % 3 == 0                     # a worker still on schema 1, mid-upgrade
        seq = service.mirror.next_seq
        service.insert_payload(schema1_bytes(b) if old else encode(b))
        want = expert_labels(b.actor, b.action) if old else b.expert_action
        rows = range(seq, seq + b.num_rows())
        label.update(zip(rows, want.tolist()))
        action.update(zip(rows, b.action.tolist()))
        old_rows.update(rows if old else ())
    assert service.mirror.next_seq == 600 and metric("tempest_replay_inserted_total") == 600
    assert service.store.buffered == len(batches), "every batch queued for Redis, schema 1 too"
    dealer.send(encode(SampleRequest(1, 4000, 3, 0.9, False, 0.4, 0.0)))
    [reply] = drain(service, dealer, 1)
    assert reply.error is None and reply.expert_action.dtype == np.int16
    check_rows(reply, label, action)
    index = reply.index.astype(np.int64)
    new = np.array([i not in old_rows for i in index])
    labelled_other = (reply.expert_action >= 0) & (reply.actor != ACTOR_EXPERT)
    assert np.any(new & labelled_other), "schema-2 network rows keep their labels"
    assert not np.any(~new & labelled_other), "schema-1 rows: labels on expert rows only"
    assert np.any(~new & (reply.actor == ACTOR_EXPERT) & (reply.expert_action >= 0))
