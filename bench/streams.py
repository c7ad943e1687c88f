"""Realistic TransitionBatch streams for the benches that feed the replay (replay.py, learner.py).

One stream is what one emulator worker sends: episodes (lives) of 300..3000 steps numbered from
step 0, a terminal at the end of most, a truncated (bootstrap-only, action NO_ACTION) last record
on 10%; 30% expert actions; a game reward of 150 on 2% of the steps, small shaping noise on all;
random float16 states of STATE_SIZE.  Expert labels (expert_action): the action on expert rows,
a random action on NETWORK_LABELLED of the network's rows (a worker asking the expert on the
network's states, DAgger; the rest: no answer in time), NO_ACTION elsewhere.  The last episode
stays open.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tempest_common.messages import ACTOR_EXPERT, ACTOR_NETWORK, NO_ACTION, TransitionBatch, expert_labels
from tempest_common.state_vector import STATE_SIZE

# every per-row field, from the message itself: a field added later is counted without an edit here
ROW_FIELDS = tuple(f.name for f in dataclasses.fields(TransitionBatch) if f.metadata.get("rows"))
NETWORK_LABELLED = 0.93   # with 30% expert rows, ~95% of the rows labelled (bench/learner.py's share)


def stream_batches(stream_idx: int, rows: int, rng: np.random.Generator, n_actions: int,
                   batch_rows: int | None = None, copy: bool = False) -> list[TransitionBatch]:
    """Stream `stream_idx`'s first `rows` transitions (stream_id bench-stream-I, worker_id
    bench-worker-I, episode ids from I * 1e9), actions uniform over 0..n_actions-1, cut into
    batches of `batch_rows` rows, or of 64..4096 rows drawn from rng when batch_rows is None.
    copy: each batch owns its arrays (else they are views of the stream's)."""
    ep = np.empty(rows, np.int64)
    step = np.empty(rows, np.int32)
    terminal = np.zeros(rows, bool)
    truncated = np.zeros(rows, bool)
    pos, episode = 0, stream_idx * 1_000_000_000
    while pos < rows:
        length = int(rng.integers(300, 3000))
        end = min(rows, pos + length)
        ep[pos:end] = episode
        step[pos:end] = np.arange(end - pos, dtype=np.int32)
        if end == pos + length:              # finished within the data (the last one stays open)
            (truncated if rng.random() < 0.1 else terminal)[end - 1] = True
        pos, episode = end, episode + 1
    action = rng.integers(0, n_actions, rows).astype(np.int16)
    action[truncated] = NO_ACTION
    actor = np.where(rng.random(rows) < 0.3, ACTOR_EXPERT, ACTOR_NETWORK).astype(np.uint8)
    reward_game = np.where(rng.random(rows) < 0.02, 150.0, 0.0).astype(np.float32)
    reward_shaping = (rng.standard_normal(rows) * 0.01).astype(np.float32)
    state = rng.random((rows, STATE_SIZE), dtype=np.float32).astype(np.float16)
    asked = (actor == ACTOR_NETWORK) & ~truncated & (rng.random(rows) < NETWORK_LABELLED)
    expert_action = np.where(asked, rng.integers(0, n_actions, rows), expert_labels(actor, action)).astype(np.int16)
    cols = (ep, step, actor, action, reward_game, reward_shaping, terminal, truncated, state, expert_action)
    out, a = [], 0
    while a < rows:
        b = slice(a, min(rows, a + (batch_rows or int(rng.integers(64, 4097)))))
        out.append(TransitionBatch(f"bench-stream-{stream_idx}", f"bench-worker-{stream_idx}",
                                   *(c[b].copy() if copy else c[b] for c in cols)))
        a = b.stop
    return out


def raw_bytes_per_transition(batch: TransitionBatch) -> int:
    """The array bytes of one transition: a row of every per-row field of an actual batch."""
    rows = batch.num_rows()
    total = 0
    for name in ROW_FIELDS:
        arr = getattr(batch, name)
        assert arr.shape[0] == rows
        total += arr.nbytes
    assert total % rows == 0
    return total // rows
