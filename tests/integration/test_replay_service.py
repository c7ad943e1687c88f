"""Integration: the real replay service process, a real redis-server, real ZeroMQ."""
from __future__ import annotations

import os
import signal
import time

import msgpack
import numpy as np
import pytest
import redis
import zmq

from services.replay.client import ReplayClient, ReplayRefused, TransitionSender
from tempest_common.messages import TransitionBatch
from tempest_common.wire import SCHEMA_VERSION
from tests.conftest import free_port, scrape, start_service, stop_process, wait_for

pytestmark = pytest.mark.integration
D = 8
GAMMA = 0.9


def make_episode(stream: int, episode: int, length: int, end: str, rng) -> dict:
    """Rows identify themselves in their state: [stream, episode, step, 1, ...]."""
    steps = np.arange(length)
    state = np.zeros((length, D), np.float16)
    state[:, 0], state[:, 1], state[:, 2], state[:, 3] = stream, episode, steps, 1
    terminal = np.zeros(length, bool)
    truncated = np.zeros(length, bool)
    action = rng.integers(0, 44, length).astype(np.int16)
    if end == "terminal":
        terminal[-1] = True
    elif end == "truncated":
        truncated[-1] = True
        action[-1] = -1
    return dict(episode_id=np.full(length, episode, np.int64), step=steps.astype(np.int32),
                actor=np.full(length, 2, np.uint8), action=action,
                reward_game=rng.integers(-3, 10, length).astype(np.float32),
                reward_shaping=np.where(truncated, 0, 0.5).astype(np.float32),
                terminal=terminal, truncated=truncated, state=state)


def to_batches(stream_id: str, ep: dict, size: int):
    n = len(ep["step"])
    for i in range(0, n, size):
        yield TransitionBatch(stream_id, "test", **{k: v[i:i + size] for k, v in ep.items()})


def expected_return(ep: dict, t: int, n: int) -> tuple[float, float, int]:
    """Brute force: (R, discount, bootstrap step) for row t of a finished episode."""
    r, k = 0.0, 0
    while k < n:
        if ep["truncated"][t + k]:
            return r, GAMMA ** k, t + k
        r += GAMMA ** k * (ep["reward_game"][t + k] + ep["reward_shaping"][t + k])
        if ep["terminal"][t + k]:
            return r, 0.0, None
        k += 1
    return r, GAMMA ** n, t + n


@pytest.fixture()
def replay(redis_server, tmp_path):
    ports = {"pull": free_port(), "router": free_port(), "metrics": free_port()}
    env = {"REDIS_URL": redis_server, "REPLAY_PULL_BIND": f"tcp://127.0.0.1:{ports['pull']}",
           "REPLAY_BIND": f"tcp://127.0.0.1:{ports['router']}", "METRICS_PORT": str(ports["metrics"]),
           "REPLAY_CAPACITY": "5000", "STATE_DIM": str(D), "MIN_SIZE_TO_SAMPLE": "50", "SEED": "3"}
    procs = []

    def start(**extra):
        e = dict(env, **{k: str(v) for k, v in extra.items()})
        proc = start_service("services.replay.main", e, tmp_path / f"replay{len(procs)}.log")
        procs.append(proc)
        wait_for(lambda: scrape(ports["metrics"]), 30, what="replay metrics")
        return proc
    yield start, ports, redis_server
    for p in procs:
        stop_process(p)


def test_two_streams_sample_correct_nstep_and_survive_kill(replay):
    start, ports, redis_url = replay
    proc = start()
    rng = np.random.default_rng(0)
    episodes = {}
    for stream in (0, 1):
        for e in range(6):
            end = ["terminal", "truncated", "terminal"][e % 3]
            episodes[(stream, e)] = make_episode(stream, e, int(rng.integers(3, 40)), end, rng)
    senders = [TransitionSender(f"tcp://127.0.0.1:{ports['pull']}") for _ in range(2)]
    queues = [[b for e in range(6) for b in to_batches(f"s{s}", episodes[(s, e)], 7)] for s in (0, 1)]
    while any(queues):  # interleave the two streams batch by batch
        for s in (0, 1):
            if queues[s]:
                senders[s].send(queues[s].pop(0))
    total = sum(len(ep["step"]) for ep in episodes.values())
    wait_for(lambda: scrape(ports["metrics"])["tempest_replay_redis_written_total"] == total, 20,
             what="all transitions written to Redis")
    client = ReplayClient(f"tcp://127.0.0.1:{ports['router']}")

    def check_sample(n: int) -> set:
        batch = client.sample(400, n_step=n, gamma=GAMMA, prioritized=False)
        seen = set()
        for i in range(400):
            s, e, t = (int(x) for x in batch.state[i, :3])
            ep = episodes[(s, e)]
            r, disc, boot = expected_return(ep, t, n)
            assert np.isclose(batch.reward[i], r, rtol=1e-5, atol=1e-5)
            assert np.isclose(batch.discount[i], disc, rtol=1e-6)
            assert batch.action[i] == ep["action"][t] and not ep["truncated"][t]
            if boot is not None:
                assert list(batch.next_state[i, :3]) == [s, e, boot], "bootstraps from its own episode"
            seen.add((s, e, t, int(batch.index[i])))
        return seen

    before = check_sample(5) | check_sample(3)
    size = scrape(ports["metrics"])["tempest_replay_size"]
    assert size == total
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    start()  # metrics come up before the mirror is rebuilt from Redis: wait for the rebuild
    wait_for(lambda: scrape(ports["metrics"])["tempest_replay_size"] == size, 30, what="the mirror rebuilt")
    after = check_sample(5) | check_sample(1)
    # The same (stream, episode, step) rows sit under the same sample indices after the restart.
    by_index = {i: key for *key, i in before}
    assert all(by_index.get(i, key) == key for *key, i in (tuple(x) for x in after))
    r = redis.Redis.from_url(redis_url)
    assert int(r.get("tempest:replay:rows")) == total
    client.close()


def one_episode_with_priorities(ports, rows: int, seed: int, stored_metric: str):
    """One terminal episode of `rows` rows stored, every row sampled once to learn its index, and
    row k given priority k + 1.  Returns (client, priority)."""
    ep = make_episode(0, 0, rows, "terminal", np.random.default_rng(seed))
    sender = TransitionSender(f"tcp://127.0.0.1:{ports['pull']}")
    for b in to_batches("s", ep, rows):
        sender.send(b)
    wait_for(lambda: scrape(ports["metrics"])[stored_metric] == rows, 20, what="rows stored")
    client = ReplayClient(f"tcp://127.0.0.1:{ports['router']}")
    index = {int(i) for i in client.sample(10 * rows, 1, GAMMA, prioritized=False).index}
    assert len(index) == rows
    priority = np.arange(1, rows + 1, dtype=np.float32)  # row k has priority k+1
    client.update_priorities(np.array(sorted(index), np.uint64), priority)
    return client, priority


def test_prioritized_frequencies_follow_priorities(replay):
    start, ports, _ = replay
    start(PER_ALPHA=1.0, MIN_SIZE_TO_SAMPLE=10)
    client, priority = one_episode_with_priorities(ports, 40, 1, "tempest_replay_size")
    counts = np.zeros(40)
    draws = 0
    for _ in range(25):
        batch = client.sample(2000, 1, GAMMA, prioritized=True, beta=1.0)
        np.add.at(counts, batch.state[:, 2].astype(int), 1)
        draws += 2000
        # importance weights: (N P)^-beta normalised by the batch max -> lowest priority gets 1
        expected_w = (priority[batch.state[:, 2].astype(int)].min() / priority[batch.state[:, 2].astype(int)])
        assert np.allclose(batch.weight, expected_w, rtol=1e-4)
    expected = draws * priority / priority.sum()
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 39 + 4 * np.sqrt(2 * 39), f"chi-square {chi2:.1f} for 39 degrees of freedom"
    client.close()


def test_priorities_survive_kill_and_restart(replay):
    start, ports, _ = replay
    proc = start(PER_ALPHA=1.0, MIN_SIZE_TO_SAMPLE=10, PRIORITY_SNAPSHOT_S=0.2)
    client, priority = one_episode_with_priorities(ports, 30, 2, "tempest_replay_redis_written_total")
    snapshots = scrape(ports["metrics"])["tempest_replay_priority_snapshots_total"]
    wait_for(lambda: scrape(ports["metrics"])["tempest_replay_priority_snapshots_total"] >= snapshots + 2, 20,
             what="a priority snapshot taken after the update")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    start(PER_ALPHA=1.0, MIN_SIZE_TO_SAMPLE=10)
    wait_for(lambda: scrape(ports["metrics"])["tempest_replay_size"] == 30, 30, what="the mirror rebuilt")
    assert scrape(ports["metrics"])["tempest_replay_priorities_restored"] == 30
    # beta = 1: importance weights are (lowest priority in the batch) / (the row's priority)
    batch = client.sample(2000, 1, GAMMA, prioritized=True, beta=1.0)
    p = priority[batch.state[:, 2].astype(int)]
    assert np.allclose(batch.weight, p.min() / p, rtol=1e-4)
    assert batch.state[:, 2].astype(int).mean() > 18  # drawn in proportion: row k has weight k+1
    client.close()


def test_refusals_cap_and_bad_input(replay):
    start, ports, _ = replay
    proc = start(SAMPLES_PER_INSERT=2.0, MIN_SIZE_TO_SAMPLE=60)
    client = ReplayClient(f"tcp://127.0.0.1:{ports['router']}")
    with pytest.raises(ReplayRefused) as err:
        client.sample(10, 3, GAMMA)
    assert err.value.reason == "too_small" and err.value.detail == "replay holds 0 < MIN_SIZE_TO_SAMPLE=60"
    ep = make_episode(0, 0, 100, "terminal", np.random.default_rng(2))
    sender = TransitionSender(f"tcp://127.0.0.1:{ports['pull']}")
    for b in to_batches("s", ep, 50):
        sender.send(b)
    wait_for(lambda: scrape(ports["metrics"])["tempest_replay_size"] == 100, 20, what="rows stored")
    client.sample(150, 3, GAMMA)
    with pytest.raises(ReplayRefused) as err:
        client.sample(100, 3, GAMMA)  # 250 > 2.0 x 100 inserted
    assert err.value.reason == "rate_limited"
    # a waiting request is served once enough new transitions arrive
    rid = client.send_sample(100, 3, GAMMA, wait_s=10)
    time.sleep(0.3)
    for b in to_batches("s", make_episode(0, 1, 50, "terminal", np.random.default_rng(3)), 50):
        sender.send(b)
    assert client.receive(rid, 15).state.shape == (100, D)
    with pytest.raises(ReplayRefused) as err:
        client.sample(10, 1000, GAMMA)  # n beyond what the replay serves
    assert err.value.reason == "bad_request"
    # garbage on both sockets is counted and the service carries on
    raw = zmq.Context.instance().socket(zmq.PUSH)
    raw.connect(f"tcp://127.0.0.1:{ports['pull']}")
    bad = make_episode(0, 2, 10, "terminal", np.random.default_rng(4))
    bad["state"][3, 4] = np.nan     # (a NaN reward fails encode itself: TransitionBatch.validate)
    for b in to_batches("s", bad, 10):
        sender.send(b)
    raw.send(b"garbage")
    raw.send(msgpack.packb({"v": SCHEMA_VERSION + 1, "kind": "transitions"}))   # a version never written
    wait_for(lambda: scrape(ports["metrics"])['tempest_replay_malformed_total{reason="wrong_version"}'] == 1, 10,
             what="malformed batches counted")
    assert scrape(ports["metrics"])['tempest_replay_malformed_total{reason="not_msgpack"}'] == 1
    assert scrape(ports["metrics"])['tempest_replay_malformed_total{reason="nonfinite"}'] == 1
    assert scrape(ports["metrics"])["tempest_replay_size"] == 150, "the NaN batch is not stored"
    assert proc.poll() is None
    m = scrape(ports["metrics"])
    assert m["tempest_replay_ratio"] == pytest.approx(250 / 150)
    raw.close(0)
    client.close()


def test_a_priority_reset_forgets_the_maximum_even_across_a_kill(replay):
    """PriorityReset (a learner's rollback): new rows enter at 1 again, and the snapshot taken at the
    reset keeps a kill -9 from bringing the old maximum back from Redis."""
    start, ports, _ = replay
    proc = start(PER_ALPHA=1.0, MIN_SIZE_TO_SAMPLE=10)    # PRIORITY_SNAPSHOT_S 60: no snapshot of its own in time
    client, _ = one_episode_with_priorities(ports, 30, 4, "tempest_replay_redis_written_total")   # maximum 30
    client.close()
    stop_process(proc)                                    # a clean stop snapshots the maximum, 30
    proc = start(PER_ALPHA=1.0, MIN_SIZE_TO_SAMPLE=10)
    wait_for(lambda: scrape(ports["metrics"])["tempest_replay_max_priority"] == 30, 30, what="the maximum restored")
    client = ReplayClient(f"tcp://127.0.0.1:{ports['router']}")
    client.reset_max_priority()                           # answered with an Ack (else ReplayRefused / a timeout)
    client.close()
    m = wait_for(lambda: (lambda m: m if m["tempest_replay_priority_snapshots_total"] >= 1 else None)(
        scrape(ports["metrics"])), 10, what="the reset's snapshot in Redis")
    assert m["tempest_replay_priority_resets_total"] == 1 and m["tempest_replay_max_priority"] == 1.0
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    start(PER_ALPHA=1.0, MIN_SIZE_TO_SAMPLE=10)
    wait_for(lambda: scrape(ports["metrics"])["tempest_replay_priorities_restored"] == 30, 30, what="the rebuild")
    wait_for(lambda: scrape(ports["metrics"])["tempest_replay_max_priority"] == 1.0, 5,
             what="the maximum as the reset left it, not 30")
