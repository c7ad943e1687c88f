"""Integration: expert labels (TransitionBatch.expert_action, schema 2) through the real replay
process, a real redis-server and real ZeroMQ: labels come back with exactly the sampled row, also
after a kill -9 and the rebuild from Redis; chunks stored under schema 1 (before labels existed)
are rebuilt with derived labels, none dropped."""
from __future__ import annotations

import dataclasses
import os
import signal

import msgpack
import numpy as np
import pytest
import redis

from services.replay.client import ReplayClient, TransitionSender
from tempest_common.actions import NUM_ACTIONS
from tempest_common.messages import ACTOR_EXPERT, ACTOR_NETWORK, NO_ACTION, TransitionBatch, expert_labels
from tempest_common.wire import encode
from tests.conftest import scrape, wait_for
from tests.integration.test_replay_service import D, GAMMA, expected_return, replay  # noqa: F401  (replay: the fixture)

pytestmark = pytest.mark.integration
PREFIX = "tempest:replay"     # the service's default REPLAY_REDIS_PREFIX


def labelled_episode(stream: int, episode: int, length: int, rng, truncated_end: bool = False) -> TransitionBatch:
    """One finished episode; rows identify themselves in their state ([stream, episode, step, 1]).
    Expert and network rows mixed; most network rows carry an expert label, some NO_ACTION."""
    steps = np.arange(length)
    state = np.zeros((length, D), np.float16)
    state[:, 0], state[:, 1], state[:, 2], state[:, 3] = stream, episode, steps, 1
    terminal, truncated = np.zeros(length, bool), np.zeros(length, bool)
    (truncated if truncated_end else terminal)[-1] = True
    actor = np.where(rng.random(length) < 0.4, ACTOR_EXPERT, ACTOR_NETWORK).astype(np.uint8)
    action = np.where(truncated, NO_ACTION, rng.integers(0, NUM_ACTIONS, length)).astype(np.int16)
    asked = (actor == ACTOR_NETWORK) & ~truncated & (rng.random(length) < 0.7)
    label = np.where(asked, rng.integers(0, NUM_ACTIONS, length), expert_labels(actor, action)).astype(np.int16)
    return TransitionBatch(f"s{stream}", "test", np.full(length, episode, np.int64), steps.astype(np.int32),
                           actor, action, rng.integers(-3, 10, length).astype(np.float32),
                           np.full(length, 0.5, np.float32), terminal, truncated, state, label)


def schema1_bytes(batch: TransitionBatch) -> bytes:
    """The batch as a schema-1 sender wrote it (and the replay stored it): no expert_action, v 1."""
    obj = msgpack.unpackb(encode(batch), raw=False)
    obj["v"] = 1
    del obj["expert_action"], obj["first_row"]   # schema 1 had neither (wire.UPGRADES)
    return msgpack.packb(obj, use_bin_type=True)


def row_key(state: np.ndarray) -> list[tuple[int, int, int]]:
    return [tuple(int(x) for x in row[:3]) for row in state]


def check_labels(client: ReplayClient, want: dict[tuple[int, int, int], tuple[int, int]],
                 seq_of: dict[tuple[int, int, int], int], n: int) -> dict:
    """Sample; each sampled row's index is the seq the row was stored under, and its (action,
    label) are the ones stored with it.  Returns {index: row} of the sample."""
    reply = client.sample(4000, n_step=n, gamma=GAMMA, prioritized=False)
    assert reply.expert_action.dtype == np.int16
    keys = row_key(reply.state)
    assert reply.index.tolist() == [seq_of[k] for k in keys]
    got = list(zip(reply.action.tolist(), reply.expert_action.tolist()))
    assert got == [want[k] for k in keys]
    return dict(zip(reply.index.tolist(), keys))


def test_labels_survive_insert_sample_and_a_kill(replay):
    start, ports, _ = replay
    proc = start()
    rng = np.random.default_rng(11)
    episodes = [labelled_episode(s, e, int(rng.integers(5, 40)), rng, truncated_end=e % 3 == 1)
                for e in range(5) for s in (0, 1)]       # the two streams' episodes interleaved
    want, seq_of = {}, {}
    sender = TransitionSender(f"tcp://127.0.0.1:{ports['pull']}")
    for ep in episodes:               # one sender, one PULL socket: rows get seqs in this order
        sender.send(ep)
        want.update(zip(row_key(ep.state), zip(ep.action.tolist(), ep.expert_action.tolist())))
        seq_of.update((k, len(seq_of)) for k in row_key(ep.state))
    total = len(want)
    wait_for(lambda: scrape(ports["metrics"])["tempest_replay_redis_written_total"] == total, 20,
             what="all transitions written to Redis")
    client = ReplayClient(f"tcp://127.0.0.1:{ports['router']}")
    for n in (1, 3):
        check_labels(client, want, seq_of, n)
    labels = [label for _, label in want.values()]
    assert NO_ACTION in labels and any(label >= 0 for label in labels)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    start()
    wait_for(lambda: scrape(ports["metrics"])["tempest_replay_size"] == total, 30, what="the mirror rebuilt")
    for n in (1, 5):                  # the same rows under the same seqs, with their labels, after the rebuild
        check_labels(client, want, seq_of, n)
    client.close()
    sender.close()


def store_chunks(redis_url: str, chunks: list[tuple[int, bytes]]) -> None:
    """Redis as a replay that ran before left it (storage.py's layout): chunks at their seqs."""
    r = redis.Redis.from_url(redis_url)
    rows = [msgpack.unpackb(p, raw=False)["step"]["shape"][0] for _, p in chunks]
    pipe = r.pipeline(transaction=True)
    for (seq, payload), n in zip(chunks, rows):
        pipe.set(f"{PREFIX}:chunk:{seq}", payload)
        pipe.rpush(f"{PREFIX}:chunks", f"{seq}:{n}")
    last_seq, last_rows = chunks[-1][0], rows[-1]
    pipe.set(f"{PREFIX}:rows", sum(rows))
    pipe.set(f"{PREFIX}:next_seq", last_seq + last_rows)
    pipe.set(f"{PREFIX}:inserted_total", sum(rows))
    pipe.execute()


def test_schema1_chunks_in_redis_are_rebuilt_with_derived_labels(replay, tmp_path):
    start, ports, redis_url = replay
    rng = np.random.default_rng(12)
    # (stream, episode, schema of each half): stream 0's episode 2 was half stored before the
    # upgrade (schema 1) and half after (schema 2), so its n-step windows cross the two.
    plan = [(0, 0, (1,)), (1, 0, (1,)), (0, 1, (1,)), (1, 1, (1,)), (0, 2, (1, 2)), (0, 3, (2,)), (1, 2, (1,))]
    chunks, want, seq_of, episodes, old_rows, seq = [], {}, {}, {}, set(), 0
    for stream, e, versions in plan:
        ep = labelled_episode(stream, e, 20 if len(versions) == 2 else int(rng.integers(5, 30)), rng,
                              truncated_end=e == 1)
        episodes[(stream, e)] = ep
        half = ep.num_rows() // len(versions)
        for i, version in enumerate(versions):
            part = slice_batch(ep, i * half, ep.num_rows() if i == len(versions) - 1 else (i + 1) * half)
            keys = row_key(part.state)
            labels = expert_labels(part.actor, part.action) if version == 1 else part.expert_action
            want.update(zip(keys, zip(part.action.tolist(), labels.tolist())))
            old_rows.update(keys if version == 1 else ())
            seq_of.update((k, seq + j) for j, k in enumerate(keys))
            chunks.append((seq, schema1_bytes(part) if version == 1 else encode(part)))
            seq += part.num_rows()
    store_chunks(redis_url, chunks)
    start(MIN_SIZE_TO_SAMPLE=10)
    wait_for(lambda: scrape(ports["metrics"])["tempest_replay_size"] == seq, 30, what="the mirror rebuilt")
    log_text = (tmp_path / "replay0.log").read_text()
    assert "skipping unreadable chunk" not in log_text, log_text
    client = ReplayClient(f"tcp://127.0.0.1:{ports['router']}")
    sampled = check_labels(client, want, seq_of, 1) | check_labels(client, want, seq_of, 3)
    # nothing dropped: every sampleable row (all but the bootstrap-only ones) was drawn
    starts = {k for k, (a, _) in want.items() if a != NO_ACTION}
    assert set(sampled.values()) == starts
    old = starts & old_rows
    assert old and all((want[k][1] >= 0) == (want[k][1] == want[k][0]) for k in old), \
        "schema-1 rows: labelled with their action on expert rows, NO_ACTION elsewhere"
    assert any(want[k][1] >= 0 and want[k][1] != want[k][0] for k in starts - old_rows), "schema-2 labels kept"
    # n-step windows are right, the ones crossing schema 1 -> schema 2 too (links rebuilt)
    reply = client.sample(2000, n_step=5, gamma=GAMMA, prioritized=False)
    crossed = 0
    for i, (s_, e, t) in enumerate(row_key(reply.state)):
        ep = episodes[(s_, e)]
        r, disc, boot = expected_return({n: getattr(ep, n) for n in ("truncated", "terminal", "reward_game",
                                                                     "reward_shaping")}, t, 5)
        assert np.isclose(reply.reward[i], r, rtol=1e-5, atol=1e-5) and np.isclose(reply.discount[i], disc)
        if boot is not None:
            assert row_key(reply.next_state[i:i + 1]) == [(s_, e, boot)]
        crossed += (s_, e) == (0, 2) and t < 10 <= t + 4
    assert crossed > 0
    client.close()


def slice_batch(batch: TransitionBatch, a: int, b: int) -> TransitionBatch:
    """Rows a..b of a batch: every per-row field sliced."""
    return dataclasses.replace(batch, **{f.name: getattr(batch, f.name)[a:b] for f in dataclasses.fields(batch)
                                         if f.metadata.get("rows")})
