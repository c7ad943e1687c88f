"""Live settings over ZeroMQ: the learner's control endpoint and its typed client.

    client = ControlClient("tcp://127.0.0.1:5559")
    client.get()                        # {name: value} of every live setting
    client.set(lr=0.0005, n_step=3)     # validated by the learner; ControlError on a bad value

The server is served by the learner's own loop (`serve_pending()` when `sock` is readable).  The
client raises `ControlError` (reason "refused", detail: the learner's why) or `ControlTimeout`.
"""
from __future__ import annotations

import logging
from typing import Callable

import zmq

from tempest_common.config import ConfigError
from tempest_common.messages import ControlReply, ControlRequest
from tempest_common.request_client import RequestClient, RequestError, RequestTimeout
from tempest_common.wire import MessageError, decode, encode

log = logging.getLogger("learner.control")


class ControlError(RequestError):
    pass


class ControlTimeout(RequestTimeout):
    pass


class ControlServer:
    """Answers ControlRequests on a ROUTER; `get_settings()` and `set_settings(changes)` (which
    raises ConfigError on a bad change) belong to the learner."""

    def __init__(self, bind: str, get_settings: Callable[[], dict], set_settings: Callable[[dict], dict],
                 on_malformed: Callable[[str], None], context: zmq.Context | None = None):
        self.sock = (context or zmq.Context.instance()).socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(bind)
        self.get_settings, self.set_settings, self.on_malformed = get_settings, set_settings, on_malformed

    def serve_pending(self) -> None:
        while True:
            try:
                *envelope, payload = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.sock.send_multipart([*envelope, encode(self._answer(payload))])

    def _answer(self, payload: bytes) -> ControlReply:
        try:
            req = decode(payload, expect=ControlRequest)
        except MessageError as exc:
            self.on_malformed(exc.reason)
            return ControlReply(0, False, {}, f"{exc.reason}: {exc}")
        if req.op == "get":
            return ControlReply(req.request_id, True, self.get_settings(), None)
        try:
            return ControlReply(req.request_id, True, self.set_settings(dict(req.settings)), None)
        except ConfigError as exc:
            log.warning("refused setting change %s: %s", dict(req.settings), exc)
            return ControlReply(req.request_id, False, self.get_settings(), str(exc))

    def close(self) -> None:
        self.sock.close(0)


class ControlClient:
    def __init__(self, url: str, timeout_s: float = 10.0, context: zmq.Context | None = None):
        self.url, self.timeout_s = url, timeout_s
        self._rpc = RequestClient(url, ControlReply, context, peer="learner", error=ControlError,
                                  timeout=ControlTimeout)

    def _call(self, op: str, settings: dict) -> dict:
        rid = self._rpc.new_id()
        self._rpc.send(ControlRequest(rid, op, settings))
        reply = self._rpc.receive(rid, self.timeout_s)
        if not reply.ok:
            raise ControlError("refused", reply.error or "no reason given")
        return dict(reply.settings)

    def get(self) -> dict:
        return self._call("get", {})

    def set(self, **changes) -> dict:
        return self._call("set", changes)

    def close(self) -> None:
        self._rpc.close()
