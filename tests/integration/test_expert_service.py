"""Integration: the real expert service process over real ZeroMQ."""
from __future__ import annotations

import msgpack
import numpy as np
import pytest
import zmq

from services.expert.client import ExpertClient
from tempest_common.actions import NUM_ACTIONS
from tempest_common.game_state import decode_ram
from tempest_common.messages import ExpertReply
from tempest_common.wire import MessageError, decode
from tests.conftest import free_port, scrape, start_service, stop_process, wait_for
from tests.unit.recorded import FIRST_LIVES, ZOOM

pytestmark = pytest.mark.integration


@pytest.fixture()
def expert(tmp_path):
    port, metrics = free_port(), free_port()
    proc = start_service("services.expert.main", {"EXPERT_BIND": f"tcp://127.0.0.1:{port}",
                                                  "METRICS_PORT": str(metrics)}, tmp_path / "expert.log")
    wait_for(lambda: scrape(metrics), 30, what="expert metrics endpoint")
    yield f"tcp://127.0.0.1:{port}", metrics, proc
    stop_process(proc)


def test_answers_a_batch_of_recorded_states(expert):
    url, metrics, _ = expert
    client = ExpertClient(url)
    states = decode_ram(np.concatenate([FIRST_LIVES[100:132], ZOOM[5:15]]))
    actions = client.act(states, timeout_ms=10_000)
    assert actions is not None, "no reply from the expert service"
    assert actions.shape == (42,) and actions.dtype == np.int16
    assert np.all((actions >= 0) & (actions < NUM_ACTIONS))
    assert len(set(actions.tolist())) > 1, "the expert reacts to what it sees"
    assert scrape(metrics)["tempest_expert_decisions_total"] >= 42
    client.close()


def test_garbage_and_wrong_version_get_error_replies_and_service_survives(expert):
    url, metrics, proc = expert
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.DEALER)
    raw.connect(url)
    raw.send(b"\x00\xffnot msgpack at all")
    assert raw.poll(5000)
    reply = decode(raw.recv(), expect=ExpertReply)
    assert reply.error and reply.error.startswith("not_msgpack")
    raw.send(msgpack.packb({"v": 99, "kind": "expert_request", "request_id": 7}))
    assert raw.poll(5000)
    reply = decode(raw.recv(), expect=ExpertReply)
    assert reply.request_id == 7 and reply.error.startswith("wrong_version")
    raw.close(0)
    client = ExpertClient(url)
    assert client.act(decode_ram(FIRST_LIVES[150:151]), timeout_ms=5000) is not None, "still serving"
    m = scrape(metrics)
    assert m['tempest_expert_errors_total{reason="not_msgpack"}'] == 1
    assert m['tempest_expert_errors_total{reason="wrong_version"}'] == 1
    assert proc.poll() is None
    client.close()


def test_client_times_out_cleanly_without_a_service():
    client = ExpertClient(f"tcp://127.0.0.1:{free_port()}")
    assert client.act(decode_ram(FIRST_LIVES[150:151]), timeout_ms=50) is None
    client.close()


def test_client_refuses_an_unbatched_state_before_sending(expert):
    url, _, _ = expert
    client = ExpertClient(url)
    with pytest.raises(MessageError, match="bad_game_state"):
        client.act(decode_ram(FIRST_LIVES[150]), timeout_ms=5000)  # needs a batch dimension
    assert client.act(decode_ram(FIRST_LIVES[150:151]), timeout_ms=5000) is not None
    client.close()
