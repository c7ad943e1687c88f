"""Transition batches the replay stored in Redis as schema-2 bytes (before schema 3 added reward
settings to heartbeats) still restore after the upgrade, beside schema-1 and schema-3 chunks: the
golden bytes of each version (tests/data/golden/v1/, v2/, today's) through ReplayService.restore,
with Redis stood in for by what ChunkStore.load and iter_payloads give back."""
from __future__ import annotations

import pathlib

import numpy as np

from tempest_common.messages import NO_ACTION
from tests.unit.test_replay_hostile import replay  # noqa: F401  (the fixture)
from tests.unit.wire_examples import D, examples

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "data" / "golden"


def test_schema_1_2_and_3_chunks_restore(replay, monkeypatch):
    make, metric = replay
    service, _ = make(STATE_DIM=D, MIN_SIZE_TO_SAMPLE=1)
    payloads = {0: (GOLDEN / "v1" / "transitions.msgpack").read_bytes(),
                2: (GOLDEN / "v2" / "transitions.msgpack").read_bytes(),
                4: (GOLDEN / "transitions.msgpack").read_bytes()}
    chunks = [(seq, 2) for seq in payloads]
    monkeypatch.setattr(service.store, "load", lambda: (chunks, 6, {"inserted_total": 6, "sampled_total": 0}))
    monkeypatch.setattr(service.store, "iter_payloads", lambda listed, group=256: ((s, payloads[s]) for s, _ in listed))
    monkeypatch.setattr(service.store, "load_priorities", lambda: None)
    service.restore()
    m = service.mirror
    assert m.size == 6 and m.next_seq == 6, "every chunk restored: none skipped as unreadable"
    assert metric("tempest_replay_restore_missing_rows") == 0
    ex = examples()["transitions"]
    slots = np.flatnonzero(m.seq >= 0)
    order = slots[np.argsort(m.seq[slots])]
    np.testing.assert_array_equal(m.action[order], np.tile(ex.action, 3))
    np.testing.assert_array_equal(m.step[order], np.tile(ex.step, 3))
    np.testing.assert_array_equal(m.state[order], np.tile(ex.state.astype(m.state.dtype), (3, 1)))
    # labels: schema 1 derived (the expert row's action), schemas 2 and 3 carried
    np.testing.assert_array_equal(m.expert_action[order], np.tile([3, NO_ACTION], 3))
