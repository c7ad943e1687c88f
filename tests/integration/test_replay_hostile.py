"""Hostile input to the real replay process over TCP (issue 14): messages over the sockets'
size limits, and a peer that asks for samples and never reads them.  The in-process checks
(limits, priorities, parked requests, logging) are in tests/unit/test_replay_hostile.py."""
from __future__ import annotations

import numpy as np
import pytest
import zmq

from services.replay.client import ReplayClient, ReplayRefused, TransitionSender
from services.replay.limits import largest_priority_update_bytes, largest_transition_batch_bytes
from tempest_common.messages import MAX_BATCH_ROWS, SampleRequest, TransitionBatch
from tempest_common.wire import encode
from tests.conftest import scrape, wait_for
from tests.integration.test_replay_service import D, GAMMA, make_episode, replay, to_batches  # noqa: F401

pytestmark = pytest.mark.integration


def store_rows(ports, rows: int, sender: TransitionSender) -> None:
    for b in to_batches("s", make_episode(0, 0, rows, "terminal", np.random.default_rng(0)), 50):
        sender.send(b)
    wait_for(lambda: scrape(ports["metrics"])["tempest_replay_size"] == rows, 20, what="rows stored")


def dropped(ports, socket: str) -> float:
    return scrape(ports["metrics"])[f'tempest_replay_connections_dropped_total{{socket="{socket}"}}']


def test_oversized_messages_cut_their_connection_and_the_replay_serves_on(replay):
    start, ports, _ = replay
    proc = start(REPLAY_CAPACITY=100_000)
    sender = TransitionSender(f"tcp://127.0.0.1:{ports['pull']}")
    store_rows(ports, 100, sender)
    ctx = zmq.Context.instance()
    pull_before, router_before = dropped(ports, "pull"), dropped(ports, "router")
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 2000)
    push.connect(f"tcp://127.0.0.1:{ports['pull']}")
    push.send(bytes(largest_transition_batch_bytes(D) + 1))
    wait_for(lambda: dropped(ports, "pull") > pull_before, 20, what="the oversized batch's connection cut")
    assert scrape(ports["metrics"])['tempest_replay_malformed_total{reason="not_msgpack"}'] == 0, \
        "the oversized message never reached the service"
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 2000)
    dealer.connect(f"tcp://127.0.0.1:{ports['router']}")
    dealer.send(bytes(largest_priority_update_bytes() + 1))
    wait_for(lambda: dropped(ports, "router") > router_before, 20, what="the oversized request's connection cut")
    # the largest legitimate batch still goes through, and a well-formed request is served
    rows = MAX_BATCH_ROWS
    big = TransitionBatch("big", "w", np.zeros(rows, np.int64), np.arange(rows, dtype=np.int32),
                          np.zeros(rows, np.uint8), np.zeros(rows, np.int16), np.ones(rows, np.float32),
                          np.zeros(rows, np.float32), np.zeros(rows, bool), np.zeros(rows, bool),
                          np.ones((rows, D), np.float32))
    sender.send(big)
    wait_for(lambda: scrape(ports["metrics"])["tempest_replay_size"] == 100 + rows, 30, what="the largest batch stored")
    client = ReplayClient(f"tcp://127.0.0.1:{ports['router']}")
    assert client.sample(64, 3, GAMMA).state.shape == (64, D)
    assert proc.poll() is None
    for sock in (push, dealer):
        sock.close(0)
    client.close()
    sender.close()


def test_a_peer_that_never_reads_its_replies_makes_the_replay_busy_not_bloated(replay):
    start, ports, _ = replay
    proc = start(REPLY_BYTES_BUDGET=1 << 20)
    sender = TransitionSender(f"tcp://127.0.0.1:{ports['pull']}")
    store_rows(ports, 100, sender)
    # Asks for ~225 KB replies and reads none: a tiny receive window, one message in its queue.
    hog = zmq.Context.instance().socket(zmq.DEALER)
    hog.setsockopt(zmq.RCVHWM, 1)
    hog.setsockopt(zmq.RCVBUF, 4096)
    hog.setsockopt(zmq.LINGER, 0)
    hog.connect(f"tcp://127.0.0.1:{ports['router']}")
    for rid in range(200):
        hog.send(encode(SampleRequest(rid, 4096, 1, GAMMA, False, 0.4, 0.0)))
    def refusing() -> dict:   # every request answered, and (the gauge is set once per loop) held
        m = scrape(ports["metrics"])
        answered = m['tempest_replay_refused_total{reason="busy"}'] + m["tempest_replay_samples_total"] // 4096
        return m if answered == 200 and m["tempest_replay_reply_bytes_in_flight"] >= 1 << 20 else {}
    held = wait_for(refusing, 30, what="samples refused as busy")["tempest_replay_reply_bytes_in_flight"]
    assert held < 2 << 20, "the replay stopped building replies at about the budget"
    client = ReplayClient(f"tcp://127.0.0.1:{ports['router']}")
    with pytest.raises(ReplayRefused) as err:
        client.sample(64, 1, GAMMA)
    assert err.value.reason == "busy"
    hog.close(0)   # the connection goes, and ZeroMQ drops what it held for it
    wait_for(lambda: scrape(ports["metrics"])["tempest_replay_reply_bytes_in_flight"] == 0, 20,
             what="the replies of the closed peer released")
    assert client.sample(64, 1, GAMMA).state.shape == (64, D)
    assert proc.poll() is None
    client.close()
    sender.close()
