"""RequestClient: requests and their replies over one DEALER socket, matched by request id; the
replay, expert and control clients are thin typed wrappers over it.

    rpc = RequestClient(url, expect=SampleReply, peer="replay", error=ReplayError, timeout=ReplayTimeout)
    rid = rpc.new_id()
    rpc.send(SampleRequest(rid, ...))        # await_reply=False: the reply is dropped when it comes
    reply = rpc.receive(rid, timeout_s=30)   # a reply to another request meanwhile is kept for later

A reply that does not decode raises `error(wire reason, detail)`; one with request id 0 (the peer
could not read the request at all) raises `error` with the peer's reason.  Whether a decoded reply
is a refusal is the wrapper's business: each reply type says it differently.
"""
from __future__ import annotations

import itertools
import time
from typing import Iterator

import zmq

from tempest_common.messages import Message
from tempest_common.socket_limits import limit_message_size
from tempest_common.wire import MessageError, decode, encode


class RequestError(RuntimeError):
    """A request refused by its peer, or a malformed reply; `reason` is a short word (a wire
    reason for a malformed reply, else the peer's), `detail` the rest."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class RequestTimeout(TimeoutError):
    pass


def split_reason(text: str, default: str = "error") -> tuple[str, str]:
    """(reason, detail) of an error text our services write as "reason: detail"; (default, text)
    when the text does not start with a reason word."""
    reason, sep, detail = text.partition(": ")
    return (reason, detail) if sep and reason.isidentifier() else (default, text)


class RequestClient:
    def __init__(self, url: str, expect: type | tuple[type, ...], context: zmq.Context | None = None, *,
                 peer: str = "peer", error: type[RequestError] = RequestError,
                 timeout: type[RequestTimeout] = RequestTimeout, hwm: int | None = None, copy: bool = True,
                 max_bytes: int | None = None):
        """`expect`: the reply class(es); `copy=False` decodes large replies in ZeroMQ's own buffer;
        `max_bytes`: the largest reply taken (a larger one cuts the connection, socket_limits.py)."""
        self.url, self.peer = url, peer
        self._expect, self._error, self._timeout, self._copy = expect, error, timeout, copy
        self.sock = (context or zmq.Context.instance()).socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if hwm is not None:
            self.sock.setsockopt(zmq.SNDHWM, hwm)
            self.sock.setsockopt(zmq.RCVHWM, hwm)
        if max_bytes is not None:
            limit_message_size(self.sock, max_bytes)
        self.sock.connect(url)
        self._poller = zmq.Poller()  # reused: Socket.poll builds a new Poller on every call
        self._poller.register(self.sock, zmq.POLLIN)
        self._ids = itertools.count(1)  # 0 is the peer's "I could not read your request id"
        self._awaited: set[int] = set()
        self._early: dict[int, Message] = {}  # replies read while waiting for another one

    def new_id(self) -> int:
        return next(self._ids)

    def send(self, request: Message, *, noblock: bool = False, await_reply: bool = True) -> bool:
        """Send `request` (built with an id from new_id()); False when `noblock` and the socket's
        queue is full."""
        try:
            self.sock.send(encode(request), zmq.NOBLOCK if noblock else 0)
        except zmq.Again:
            return False
        if await_reply:
            self._awaited.add(request.request_id)
        return True

    def receive(self, request_id: int, timeout_s: float) -> Message:
        """The reply to `request_id`.  After `timeout_s` raises `timeout` and forgets the request."""
        reply = self._early.pop(request_id, None)
        if reply is not None:
            return reply
        deadline = time.monotonic() + timeout_s
        remaining_ms = timeout_s * 1000.0
        while self._poller.poll(max(remaining_ms, 0.0)):  # a negative timeout would wait forever
            reply = self._read(0)
            if reply is not None:
                if reply.request_id == request_id:
                    return reply
                self._early[reply.request_id] = reply
            remaining_ms = (deadline - time.monotonic()) * 1000.0
        self.forget(request_id)
        raise self._timeout(f"no reply from the {self.peer} at {self.url} within {timeout_s:g} s")

    def arrived(self) -> Iterator[Message]:
        """The replies to awaited requests that are here now, without waiting (for an owner that
        polls `sock` in its own zmq.Poller)."""
        early, self._early = self._early, {}
        yield from early.values()
        while True:
            try:
                reply = self._read(zmq.NOBLOCK)
            except zmq.Again:
                return
            if reply is not None:
                yield reply

    def forget(self, request_id: int) -> None:
        """Nobody waits for this request any more: its reply is dropped when it comes."""
        self._awaited.discard(request_id)
        self._early.pop(request_id, None)

    def _read(self, flags: int) -> Message | None:
        frame = self.sock.recv(flags, copy=self._copy)
        try:
            reply = decode(frame if self._copy else frame.buffer, expect=self._expect)
        except MessageError as exc:
            raise self._error(exc.reason, f"malformed reply from the {self.peer}: {exc.detail}") from exc
        if reply.request_id == 0:
            raise self._error(*split_reason(reply.error or "", "unreadable_request"))
        if reply.request_id not in self._awaited:
            return None
        self._awaited.remove(reply.request_id)
        return reply

    def close(self) -> None:
        self.sock.close(0)
