"""Delivery accounting end to end (issue 15): a real replay process, a real redis-server, real
ZeroMQ.  A sender skips a batch (lost on the way) and repeats one: the replay's counters show the
skipped rows missing and the repeat duplicate, stored = sent - missing - duplicates, and nothing
is stored twice.  Then the replay is killed (-9) and restarted: its accounting is rebuilt from
Redis, so a batch lost across the restart is counted missing with reason "restart", not met with
silence (or with a stream "joined" midway), and the stream carries on in order."""
from __future__ import annotations

import numpy as np
import pytest

from services.replay.client import TransitionSender
from tempest_common.messages import TransitionBatch
from tests.conftest import free_port, scrape, start_service, stop_process, wait_for

pytestmark = pytest.mark.integration
D = 8
ROWS = 16


def numbered(k: int, stream: str = "w0:1") -> TransitionBatch:
    """Batch k of one stream: rows k*ROWS.. of one episode, numbered so."""
    first = k * ROWS
    z = lambda dt: np.zeros(ROWS, dt)  # noqa: E731
    state = np.zeros((ROWS, D), np.float16)
    state[:, 0] = np.arange(first, first + ROWS) / 1024   # float16-exact: the row identifies itself
    return TransitionBatch(stream, "w0", z(np.int64), np.arange(first, first + ROWS, dtype=np.int32),
                           z(np.uint8), z(np.int16), z(np.float32), z(np.float32), z(bool), z(bool), state,
                           first_row=first)


def test_skipped_and_repeated_batches_are_counted_and_survive_a_restart(redis_server, tmp_path):
    ports = {"pull": free_port(), "router": free_port(), "metrics": free_port()}
    env = {"REDIS_URL": redis_server, "REPLAY_PULL_BIND": f"tcp://127.0.0.1:{ports['pull']}",
           "REPLAY_BIND": f"tcp://127.0.0.1:{ports['router']}", "METRICS_PORT": str(ports["metrics"]),
           "REPLAY_CAPACITY": "5000", "STATE_DIM": str(D), "SEED": "3"}
    m = lambda name, **labels: scrape(ports["metrics"]).get(   # noqa: E731  (the client sorts label names)
        f"tempest_replay_{name}" + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
                                    if labels else ""))
    procs = []
    sender = TransitionSender(f"tcp://127.0.0.1:{ports['pull']}")
    try:
        procs.append(start_service("services.replay.main", env, tmp_path / "replay0.log"))
        wait_for(lambda: scrape(ports["metrics"]), 30, what="replay metrics")
        order = [0, 1, 2, 4, 4, 5, 6, 7, 8, 9]        # batch 3 lost on the way, batch 4 sent twice
        for k in order:
            sender.send(numbered(k))
        sent = len(order) * ROWS
        wait_for(lambda: m("transitions_received_total", worker="w0") == sent, 20, what="every row received")
        missing = m("transitions_missing_total", worker="w0", reason="gap")
        duplicate = m("transitions_dropped_total", worker="w0", reason="duplicate")
        stored = m("transitions_stored_total", worker="w0")
        assert (missing, duplicate) == (ROWS, ROWS)
        assert stored == sent - duplicate == 9 * ROWS
        assert m("transitions_received_total", worker="w0") == stored + duplicate   # received = stored + dropped
        assert m("transitions_missing_total", worker="w0", reason="restart") == 0
        assert m("stream_batches_total", outcome="gap") == 1 and m("stream_batches_total", outcome="duplicate") == 1
        wait_for(lambda: m("redis_written_total") == stored, 20, what="every stored row in Redis")

        procs[0].kill()   # kill -9: what Redis holds survives; the accounting is rebuilt from it
        procs[0].wait(10)
        procs.append(start_service("services.replay.main", env, tmp_path / "replay1.log"))
        wait_for(lambda: scrape(ports["metrics"]), 30, what="replay metrics after the restart")
        assert m("size") == stored and m("restore_missing_rows") == 0
        sender.send(numbered(11))   # batch 10 lost across the restart (in flight, or not yet in Redis)
        sender.send(numbered(12))
        wait_for(lambda: m("transitions_received_total", worker="w0") == 2 * ROWS, 20, what="rows after restart")
        # judged against where Redis left the stream, not met as a stream never seen ("joined")
        assert m("stream_batches_total", outcome="joined") == 0 and m("stream_batches_total", outcome="gap") == 1
        assert m("stream_batches_total", outcome="in_order") == 1
        assert m("transitions_missing_total", worker="w0", reason="restart") == ROWS
        assert m("transitions_missing_total", worker="w0", reason="gap") == 0
        assert m("transitions_stored_total", worker="w0") == 2 * ROWS
        assert m("size") == stored + 2 * ROWS
    finally:
        sender.close()
        for p in procs:
            stop_process(p)
