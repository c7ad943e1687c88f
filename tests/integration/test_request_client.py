"""Integration: the shared RequestClient against a real ZeroMQ ROUTER played by the test."""
from __future__ import annotations

import time

import msgpack
import pytest
import zmq

from tempest_common.messages import Ack, ControlReply, ControlRequest
from tempest_common.request_client import RequestClient, RequestError, RequestTimeout, split_reason
from tempest_common.wire import decode, encode
from tests.conftest import free_port

pytestmark = pytest.mark.integration


class PeerError(RequestError):
    pass


class PeerTimeout(RequestTimeout):
    pass


@pytest.fixture()
def pair():
    """(client, router, serve): `serve()` reads one request off the ROUTER -> (envelope, request)."""
    url = f"tcp://127.0.0.1:{free_port()}"
    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(url)
    client = RequestClient(url, ControlReply, peer="peer", error=PeerError, timeout=PeerTimeout)

    def serve():
        assert router.poll(5000), "no request reached the router"
        *envelope, payload = router.recv_multipart()
        return envelope, decode(payload, expect=ControlRequest)
    yield client, router, serve
    client.close()
    router.close(0)


def answer(router, envelope, request_id: int, ok: bool = True, error: str | None = None, **settings) -> None:
    router.send_multipart([*envelope, encode(ControlReply(request_id, ok, settings, error))])


def request(client: RequestClient, await_reply: bool = True) -> int:
    rid = client.new_id()
    assert client.send(ControlRequest(rid, "get", {}, ""), await_reply=await_reply)
    return rid


def test_replies_are_matched_by_id_and_an_early_one_is_kept(pair):
    client, router, serve = pair
    a, b = request(client), request(client)
    (env, req_a), (_, req_b) = serve(), serve()
    assert (req_a.request_id, req_b.request_id) == (a, b) and a != b
    answer(router, env, b, which="b")
    answer(router, env, a, which="a")
    assert client.receive(a, 5).settings == {"which": "a"}  # b's reply came first and was kept
    assert client.receive(b, 0).settings == {"which": "b"}


def test_fire_and_forget_and_forgotten_replies_are_dropped(pair):
    client, router, serve = pair
    fire, forgotten, wanted = request(client, await_reply=False), request(client), request(client)
    env, _ = serve()
    serve(), serve()
    client.forget(forgotten)
    for rid in (fire, forgotten, wanted):
        answer(router, env, rid, rid=rid)
    assert client.receive(wanted, 5).settings == {"rid": wanted}
    assert list(client.arrived()) == []


def test_arrived_reads_what_is_here_without_waiting(pair):
    client, router, serve = pair
    assert list(client.arrived()) == []
    a, b = request(client), request(client)
    env, _ = serve()
    serve()
    answer(router, env, b)
    answer(router, env, a)
    deadline = time.monotonic() + 5
    got = []
    while len(got) < 2 and time.monotonic() < deadline:
        got += [r.request_id for r in client.arrived()]
    assert got == [b, a]


def test_timeout_raises_the_typed_timeout_and_forgets_the_request(pair):
    client, router, serve = pair
    rid = request(client)
    env, _ = serve()
    t0 = time.monotonic()
    with pytest.raises(PeerTimeout, match="no reply from the peer"):
        client.receive(rid, 0.2)
    assert 0.15 < time.monotonic() - t0 < 2
    answer(router, env, rid)  # too late: dropped
    later = request(client)
    answer(router, env, later)
    assert client.receive(later, 5).request_id == later
    assert list(client.arrived()) == []


@pytest.mark.parametrize("payload, reason", [
    (b"\x00\xffnot msgpack", "not_msgpack"),
    (msgpack.packb({"v": 99, "kind": "control_reply"}), "wrong_version"),
    (encode(Ack(1, None)), "unexpected_kind"),
])
def test_a_malformed_reply_raises_the_typed_error_with_the_wire_reason(pair, payload, reason):
    client, router, serve = pair
    rid = request(client)
    env, _ = serve()
    router.send_multipart([*env, payload])
    with pytest.raises(PeerError) as err:
        client.receive(rid, 5)
    assert err.value.reason == reason and "malformed reply from the peer" in err.value.detail


def test_a_reply_with_id_0_raises_the_peers_reason(pair):
    client, router, serve = pair
    rid = request(client)
    env, _ = serve()
    answer(router, env, 0, ok=False, error="bad_field: control_request.op: expected str")
    with pytest.raises(PeerError) as err:
        client.receive(rid, 5)
    assert (err.value.reason, err.value.detail) == ("bad_field", "control_request.op: expected str")


def test_noblock_send_reports_a_full_queue_instead_of_blocking():
    client = RequestClient(f"tcp://127.0.0.1:{free_port()}", ControlReply, hwm=1)  # nobody listens
    sent = [client.send(ControlRequest(client.new_id(), "get", {}, ""), noblock=True) for _ in range(5)]
    assert sent[0] and not all(sent)
    client.close()


def test_split_reason():
    assert split_reason("too_small: replay holds 3 < 500") == ("too_small", "replay holds 3 < 500")
    assert split_reason("lr=5 is out of range: 1e-07 <= value", "refused") == \
        ("refused", "lr=5 is out of range: 1e-07 <= value")
    assert split_reason("") == ("error", "")
