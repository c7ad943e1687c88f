"""The worker's side of delivery accounting (issue 15): rows are numbered per stream
(TransitionBatch.first_row) continuously across batches, the sent counter matches the rows the
replay's socket took, and a batch the socket refuses is counted dropped with its reason and gives
its numbers to the next batch (so a gap the replay sees is loss after the hand-off).  A real
EmulatorWorker (no MAME: its records come from recorded RAM) and a real ZeroMQ PULL socket."""
import numpy as np
import pytest
import zmq
from prometheus_client import CollectorRegistry

from services.emulator.config import load_emulator_config
from services.emulator.metrics import WorkerMetrics
from services.emulator.worker import EmulatorWorker
from tempest_common.messages import TransitionBatch
from tempest_common.wire import decode
from tests.conftest import free_port
from tests.unit.recorded import FIRST_LIVES
from tests.unit.test_worker_parts import records_of

RECORDS = records_of(FIRST_LIVES[:300])


def worker(replay_addr: str, **env) -> EmulatorWorker:
    cfg = load_emulator_config({"WORKER_ID": "w7", "REPLAY_ADDR": replay_addr, "LEARNER_EPISODES_ADDR": "",
                                "WEIGHTS_ADDR": "", "EXPERT_ADDR": "", "METRICS_PORT": "0",
                                "TRANSITION_BATCH": "16", **env})
    w = EmulatorWorker(cfg, WorkerMetrics(registry := CollectorRegistry()))
    w.registry = registry
    return w


def value(w: EmulatorWorker, name: str, **labels) -> float:
    v = w.registry.get_sample_value(name, {"worker": "w7", **labels})
    assert v is not None, f"{name}{labels} does not exist"   # every label value exists from the start
    return v


def feed(w: EmulatorWorker, records, step: int = 5) -> None:
    """What the game loop does with each tick's records (worker._after_tick)."""
    for i in range(0, len(records), step):
        w._send_batch(w.adder.add(records[i:i + step]))


@pytest.fixture()
def pull():
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    addr = f"tcp://127.0.0.1:{free_port()}"
    yield sock, addr
    sock.close(0)
    ctx.term()


def receive(sock, rows: int) -> list[TransitionBatch]:
    """Batches until they hold `rows` rows."""
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    out = []
    while sum(b.num_rows() for b in out) < rows:
        out.append(decode(sock.recv(), expect=TransitionBatch))
    return out


def test_first_row_is_continuous_and_sent_counts_every_row(pull):
    sock, addr = pull
    sock.bind(addr)
    w = worker(addr)
    try:
        feed(w, RECORDS)
        assert value(w, "tempest_emulator_transitions_pending") == w.adder.pending > 0
        w._send_batch(w.adder.flush())   # as at stop: the rest leaves
        assert value(w, "tempest_emulator_transitions_pending") == 0
        sent = value(w, "tempest_emulator_transitions_sent_total")
        assert sent == len(RECORDS)
        batches = receive(sock, len(RECORDS))
    finally:
        w.peers.close()
    firsts = [b.first_row for b in batches]
    ends = np.cumsum([b.num_rows() for b in batches])
    assert firsts == [0, *ends[:-1]] and ends[-1] == sent
    assert {b.stream_id for b in batches} == {w.stream_id}
    assert value(w, "tempest_emulator_transitions_dropped_total", reason="queue_full") == 0


def test_a_refused_batch_is_counted_and_its_numbers_go_to_the_next(pull):
    """SEND_HWM=1 and the replay not there yet: the first batch waits in the queue (sent), the
    second is refused (dropped, queue_full); once the replay binds, the next batch carries on
    where the first ended, so the replay sees no gap for rows the worker already counted."""
    sock, addr = pull
    w = worker(addr, SEND_HWM="1")
    try:
        feed(w, RECORDS[:16], step=16)
        feed(w, RECORDS[16:32], step=16)
        assert value(w, "tempest_emulator_transitions_sent_total") == 16
        assert value(w, "tempest_emulator_transitions_dropped_total", reason="queue_full") == 16
        sock.bind(addr)
        first, = receive(sock, 16)
        feed(w, RECORDS[32:48], step=16)
        second, = receive(sock, 16)
    finally:
        w.peers.close()
    assert (first.first_row, second.first_row) == (0, 16)
    np.testing.assert_array_equal(second.step, [r.step for r in RECORDS[32:48]])
    assert value(w, "tempest_emulator_transitions_sent_total") == 32


def test_no_replay_address_drops_every_row_as_no_peer():
    w = worker("")
    try:
        feed(w, RECORDS[:40], step=20)
    finally:
        w.peers.close()
    assert value(w, "tempest_emulator_transitions_dropped_total", reason="no_peer") == 40
    assert value(w, "tempest_emulator_transitions_sent_total") == 0
    assert w.adder.next_row == 0   # nothing left: nothing numbered
