"""Socket size limits: an oversized message never reaches the service, the cut connection is
counted, and the peer's next messages arrive again (ZeroMQ reconnects by itself)."""
import time

import numpy as np
import zmq

from tempest_common.messages import Heartbeat
from tempest_common.socket_limits import limit_message_size, max_encoded_size, watch_dropped_connections
from tempest_common.wire import encode


def test_oversized_message_cuts_the_connection_and_is_counted():
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    limit_message_size(pull, 1000)
    drops = []
    watcher = watch_dropped_connections(pull, lambda: drops.append(1), "test")
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(f"tcp://127.0.0.1:{port}")
    try:
        push.send(b"small")
        assert pull.poll(2000) and pull.recv() == b"small"
        push.send(b"x" * 5000)
        deadline = time.monotonic() + 5
        while not drops:
            assert time.monotonic() < deadline, "the cut connection was not counted"
            time.sleep(0.01)
        assert not pull.poll(200), "the oversized message was delivered"
        deadline = time.monotonic() + 5
        while not pull.poll(100):   # the PUSH reconnects; later messages flow again
            assert time.monotonic() < deadline, "the peer never came back"
            push.send(b"again")
        assert pull.recv() == b"again"
    finally:
        push.close(0)
        pull.close(0)
        watcher.join(5)
        assert not watcher.is_alive(), "the monitor thread outlived its socket"
        ctx.term()


def test_max_encoded_size_covers_the_example():
    hb = Heartbeat("w" * 100, 2 ** 53, 2 ** 53, 1e9, 1e9, time.time())
    assert max_encoded_size(hb) > len(encode(hb))
    assert max_encoded_size(hb) < 64 * 1024
    assert np.isfinite(max_encoded_size(hb))
