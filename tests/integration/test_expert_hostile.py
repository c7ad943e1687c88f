"""Integration: the expert service under hostile input (services/expert/README.md, "Hostile input").

Most tests run the service in this process on its own ZeroMQ context and metrics registry (so a
test can take one turn of its loop at a time); the last one runs the real process and reads
/metrics."""
from __future__ import annotations

import logging
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq
from prometheus_client import CollectorRegistry

from services.expert import service as expert_service
from services.expert.client import ExpertClient
from services.expert.config import ExpertConfig
from services.expert.metrics import EXPERT_REASONS, ExpertMetrics
from services.expert.service import MAX_MESSAGES_PER_TURN, ExpertService, max_request_bytes
from tempest_common.actions import NUM_ACTIONS
from tempest_common.game_state import FIELD_SPECS, GameState, decode_ram
from tempest_common.messages import ExpertReply, ExpertRequest
from tempest_common.wire import SCHEMA_VERSION, decode, encode
from tests.conftest import free_port, scrape, start_service, stop_process, wait_for
from tests.fuzz.hostile_services import any_states
from tests.unit.recorded import FIRST_LIVES

pytestmark = pytest.mark.integration
ONE = decode_ram(FIRST_LIVES[150:151])


def zero_states(n: int) -> GameState:
    return GameState(**{name: np.zeros((n, *shape), dt) for name, (dt, shape) in FIELD_SPECS.items()})


def random_states(rng: np.random.Generator, n: int) -> GameState:
    """Every field any value of its dtype."""
    return GameState(**any_states(rng, n))


class InProcess:
    """An ExpertService on a private context and registry; `start()` runs its loop in a thread."""

    def __init__(self, **cfg):
        self.ctx, self.registry = zmq.Context(), CollectorRegistry()
        self.url = f"tcp://127.0.0.1:{free_port()}"
        self.svc = ExpertService(ExpertConfig(bind=self.url, metrics_port=0, **cfg), ExpertMetrics(self.registry),
                                 self.ctx)
        self.thread: threading.Thread | None = None
        self.sockets: list[zmq.Socket] = []

    def start(self) -> "InProcess":
        self.thread = threading.Thread(target=self.svc.run, daemon=True)
        self.thread.start()
        return self

    def dealer(self, kind=zmq.DEALER) -> zmq.Socket:
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(self.url)
        self.sockets.append(s)
        return s

    def errors(self, reason: str) -> float:
        return self.registry.get_sample_value("tempest_expert_errors_total", {"reason": reason})

    def value(self, name: str) -> float:
        return self.registry.get_sample_value(name)

    def close(self) -> None:
        for s in self.sockets:
            s.close(0)
        self.svc.stop()
        if self.thread is not None:
            self.thread.join(5)
            assert not self.thread.is_alive(), "the service did not stop"
        else:
            self.svc.sock.close(0)
        self.svc._watcher.join(5)
        self.ctx.term()


@pytest.fixture()
def served():
    made = []

    def make(start: bool = True, **cfg) -> InProcess:
        made.append(InProcess(**cfg))
        return made[-1].start() if start else made[-1]
    yield make
    for s in made:
        s.close()


def reply_of(sock: zmq.Socket, timeout_ms: int = 5000) -> ExpertReply:
    assert sock.poll(timeout_ms), "no reply from the expert"
    return decode(sock.recv(), expect=ExpertReply)


def test_every_reason_and_the_drop_counter_exist_from_the_start(served):
    s = served()
    for reason in EXPERT_REASONS:
        assert s.errors(reason) == 0, reason
    assert {"too_many_states", "bad_frames", "policy_error", "internal_error"} <= set(EXPERT_REASONS)
    assert s.value("tempest_expert_connections_dropped_total") == 0


def test_a_request_over_max_states_is_refused_and_counted(served):
    s = served()
    sock = s.dealer()
    sock.send(encode(ExpertRequest(11, zero_states(4097))))
    reply = reply_of(sock)
    assert reply.request_id == 11 and reply.error.startswith("too_many_states"), reply.error
    assert len(reply.actions) == 0
    assert s.errors("too_many_states") == 1
    sock.send(encode(ExpertRequest(12, zero_states(4096))))   # the largest legitimate request
    reply = reply_of(sock)
    assert reply.request_id == 12 and reply.error is None and len(reply.actions) == 4096


def test_a_message_over_the_size_limit_cuts_the_connection_and_is_counted(served):
    s = served()
    assert len(encode(ExpertRequest(1, zero_states(4096)))) < s.svc.max_request_bytes
    assert s.svc.max_request_bytes == max_request_bytes(4096) < 1_000_000
    sock = s.dealer()
    sock.send(encode(ExpertRequest(1, zero_states(1))))
    assert reply_of(sock).error is None
    sock.send(encode(ExpertRequest(2, zero_states(20_000))))   # ~3 MB
    wait_for(lambda: s.value("tempest_expert_connections_dropped_total") >= 1, 10, 0.02, "the cut connection counted")
    assert not sock.poll(300), "an oversized request was answered"
    assert s.value("tempest_expert_decisions_total") == 1
    # the DEALER reconnects by itself; the service serves it (and everyone else) again
    client = ExpertClient(s.url, s.ctx)
    wait_for(lambda: client.act(ONE, timeout_ms=500) is not None, 10, what="served again")
    client.close()


def test_absurd_field_values_get_valid_actions(served):
    s = served()
    sock, rng = s.dealer(), np.random.default_rng(14)
    batches = [random_states(rng, 4096) for _ in range(4)]
    extremes = {}
    for name, (dt, shape) in FIELD_SPECS.items():
        top = 1 if np.dtype(dt) == np.bool_ else np.iinfo(dt).max
        extremes[name] = np.full((2, *shape), top, dt)
        extremes[name][1] = 0 if np.dtype(dt) == np.bool_ else np.iinfo(dt).min
    batches += [GameState(**extremes), zero_states(0)]
    for states in batches:      # mode 0x04 / 0x20 (play, zoom) with alive players, and anything at all
        for mode in (None, 0x04, 0x20):
            if mode is not None and len(states):
                states = GameState(**{**states.to_arrays(), "mode": np.full(len(states), mode, np.uint8),
                                      "player_alive": np.ones(len(states), bool)})
            sock.send(encode(ExpertRequest(7, states)))
            reply = reply_of(sock)
            assert reply.error is None, reply.error
            assert len(reply.actions) == len(states)
            assert np.all((reply.actions >= 0) & (reply.actions < NUM_ACTIONS))
    assert all(s.errors(r) == 0 for r in EXPERT_REASONS)


def test_a_request_the_policy_fails_on_fails_alone(served, monkeypatch):
    real = expert_service.expert_actions

    def choking(states, *a, **k):
        if np.any(states.mode == 0xEE):
            raise FloatingPointError("the rules choke on mode 0xEE")
        return real(states, *a, **k)
    monkeypatch.setattr(expert_service, "expert_actions", choking)
    s = served(start=False)
    good, bad = s.dealer(), s.dealer()
    poison = GameState(**{**ONE.to_arrays(), "mode": np.array([0xEE], np.uint8)})
    good.send(encode(ExpertRequest(1, decode_ram(FIRST_LIVES[150:153]))))
    bad.send(encode(ExpertRequest(2, poison)))
    time.sleep(0.5)    # both queued: one turn decides them together
    s.svc._serve_queued()
    ok, failed = reply_of(good), reply_of(bad)
    assert ok.request_id == 1 and ok.error is None and len(ok.actions) == 3
    assert failed.request_id == 2 and failed.error.startswith("policy_error"), failed.error
    assert s.errors("policy_error") == 1
    assert s.value("tempest_expert_decisions_total") == 3


def test_one_turn_takes_a_bounded_number_of_messages(served):
    s = served(start=False)
    peers = [s.dealer() for _ in range(5)]
    for sock in peers:
        for _ in range(100):
            sock.send(b"\xc1 not msgpack")
    time.sleep(1.0)      # 500 queued in the service (100 per peer: its RCVHWM)
    s.svc._serve_queued()
    assert s.errors("not_msgpack") == MAX_MESSAGES_PER_TURN < 500
    for _ in range(10):
        s.svc._serve_queued()
    assert s.errors("not_msgpack") == 500
    for sock in peers:
        for _ in range(100):
            assert reply_of(sock).error.startswith("not_msgpack")


def test_rejects_are_logged_one_line_per_reason_however_many(served, caplog):
    caplog.set_level(logging.WARNING, logger="expert.service")
    s = served()
    sock = s.dealer()
    for i in range(300):
        sock.send(b"\xc1" if i % 2 else msgpack.packb({"v": 99, "kind": "expert_request"}))
        reply_of(sock)
    lines = [r for r in caplog.records if r.name == "expert.service" and r.levelno >= logging.WARNING]
    assert s.errors("not_msgpack") == 150 and s.errors("wrong_version") == 150
    assert len(lines) == 2, [r.getMessage() for r in lines]


def test_error_details_echoed_are_bounded(served):
    s = served()
    sock = s.dealer()
    hostile = {"v": SCHEMA_VERSION, "kind": "expert_request", "request_id": 5,
               "states": {"layout": "x" * 200_000, "n": 0, "data": b""}}
    sock.send(msgpack.packb(hostile))
    reply = reply_of(sock)
    assert reply.request_id == 5 and reply.error.startswith("bad_game_state")
    assert len(reply.error) < 1000


def test_multipart_messages_are_refused_and_req_sockets_still_served(served):
    s = served()
    sock = s.dealer()
    sock.send_multipart([b"extra", encode(ExpertRequest(3, ONE))])
    assert sock.poll(5000)
    frames = sock.recv_multipart()
    assert len(frames) == 1, "the reply went to a forged envelope"
    assert decode(frames[0], expect=ExpertReply).error.startswith("bad_frames")
    assert s.errors("bad_frames") == 1
    req = s.dealer(zmq.REQ)
    req.send(encode(ExpertRequest(4, ONE)))
    reply = reply_of(req)
    assert reply.request_id == 4 and reply.error is None and len(reply.actions) == 1


def test_stops_promptly_under_a_flood(served):
    s = served()
    stop = threading.Event()
    flooders = [s.dealer() for _ in range(3)]

    def flood(sock):
        while not stop.is_set():
            try:
                sock.send(b"\xc1", zmq.NOBLOCK)
            except zmq.Again:
                time.sleep(0.001)
    threads = [threading.Thread(target=flood, args=(f,), daemon=True) for f in flooders]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: s.errors("not_msgpack") > 2000, 20, 0.05, "the flood arriving")
        t0 = time.monotonic()
        s.svc.stop()
        s.thread.join(5)
        assert not s.thread.is_alive() and time.monotonic() - t0 < 2, "stop ignored under a flood"
    finally:
        stop.set()
        for t in threads:
            t.join(5)


def test_the_service_process_counts_cut_connections_in_metrics(tmp_path):
    port, metrics = free_port(), free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = start_service("services.expert.main", {"EXPERT_BIND": url, "METRICS_PORT": str(metrics),
                                                  "METRICS_ADDR": "127.0.0.1", "EXPERT_MAX_STATES": "64"},
                         tmp_path / "expert.log")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(url)
    try:
        wait_for(lambda: scrape(metrics), 30, what="expert metrics endpoint")
        m = scrape(metrics)
        assert m["tempest_expert_connections_dropped_total"] == 0
        assert m['tempest_expert_errors_total{reason="too_many_states"}'] == 0
        sock.send(encode(ExpertRequest(1, zero_states(65))))
        assert reply_of(sock).error.startswith("too_many_states")
        sock.send(encode(ExpertRequest(2, zero_states(max_request_bytes(64) // 100))))
        wait_for(lambda: scrape(metrics)["tempest_expert_connections_dropped_total"] >= 1, 10,
                 what="the cut connection in /metrics")
        client = ExpertClient(url, ctx)
        wait_for(lambda: client.act(ONE, timeout_ms=500) is not None, 10, what="served again")
        client.close()
        m = scrape(metrics)
        assert m['tempest_expert_errors_total{reason="too_many_states"}'] == 1
        assert proc.poll() is None
    finally:
        sock.close(0)
        ctx.term()
        stop_process(proc)
