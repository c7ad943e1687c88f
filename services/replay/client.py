"""ReplayClient: the typed client of the replay service.

    replay = ReplayClient("tcp://127.0.0.1:5560")
    batch = replay.sample(16384, n_step=5, gamma=0.995, prioritized=True, beta=0.4)   # SampleReply
    replay.update_priorities(batch.index, new_priorities)

`send_sample()` / `receive()` split a request from its reply so a learner can keep the next batch
in flight while it trains on the current one.  Transition batches go to the replay's PULL
address with `TransitionSender`.  Errors the replay reports raise `ReplayError` with its reason
("too_small", "rate_limited", "bad_request", or a wire reason).
"""
from __future__ import annotations

import itertools

import numpy as np
import zmq

from tempest_common.messages import Ack, PriorityUpdate, SampleReply, SampleRequest, TransitionBatch
from tempest_common.wire import MessageError, decode, encode


class ReplayError(RuntimeError):
    def __init__(self, message: str):
        super().__init__(message)
        self.reason = message.split(":", 1)[0]


class ReplayTimeout(TimeoutError):
    pass


class ReplayClient:
    def __init__(self, url: str, context: zmq.Context | None = None, timeout_s: float = 30.0):
        self.url = url
        self.timeout_s = timeout_s
        self._sock = (context or zmq.Context.instance()).socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(url)
        self._ids = itertools.count(1)
        self._early: dict[int, object] = {}
        self._unawaited: set[int] = set()   # fire-and-forget priority updates
        self.ignored_errors = 0

    def send_sample(self, batch_size: int, n_step: int, gamma: float, prioritized: bool = True,
                    beta: float = 0.4, wait_s: float = 0.0) -> int:
        rid = next(self._ids)
        self._sock.send(encode(SampleRequest(rid, batch_size, n_step, gamma, prioritized, beta, wait_s)))
        return rid

    def receive(self, request_id: int, timeout_s: float | None = None):
        """The reply to `request_id` (SampleReply or Ack); raises ReplayError / ReplayTimeout."""
        if request_id in self._early:
            return self._check(self._early.pop(request_id))
        timeout_ms = int(1000 * (self.timeout_s if timeout_s is None else timeout_s))
        while True:
            if not self._sock.poll(timeout_ms):
                raise ReplayTimeout(f"no reply from the replay at {self.url} in {timeout_ms / 1000:.0f} s")
            try:
                msg = decode(self._sock.recv(copy=False).buffer, expect=(SampleReply, Ack))
            except MessageError as exc:
                raise ReplayError(f"{exc.reason}: malformed reply: {exc}") from exc
            if msg.request_id in self._unawaited:
                self._unawaited.discard(msg.request_id)
                self.ignored_errors += msg.error is not None
                continue
            if msg.request_id == request_id or msg.request_id == 0:
                return self._check(msg)
            self._early[msg.request_id] = msg

    def sample(self, batch_size: int, n_step: int, gamma: float, prioritized: bool = True,
               beta: float = 0.4, wait_s: float = 0.0) -> SampleReply:
        rid = self.send_sample(batch_size, n_step, gamma, prioritized, beta, wait_s)
        return self.receive(rid, None if wait_s == 0 else self.timeout_s + wait_s)

    def send_priorities(self, index: np.ndarray, priority: np.ndarray, await_ack: bool = True) -> int:
        """Send new priorities; with await_ack=False the ack is dropped whenever it arrives."""
        rid = next(self._ids)
        if not await_ack:
            self._unawaited.add(rid)
        self._sock.send(encode(PriorityUpdate(rid, np.asarray(index, np.uint64),
                                              np.asarray(priority, np.float32))))
        return rid

    def update_priorities(self, index: np.ndarray, priority: np.ndarray) -> None:
        self.receive(self.send_priorities(index, priority))

    @staticmethod
    def _check(msg):
        if msg.error is not None:
            raise ReplayError(msg.error)
        return msg

    def close(self) -> None:
        self._sock.close(0)


class TransitionSender:
    """PUSH transition batches to the replay's PULL address (what emulator workers do)."""

    def __init__(self, url: str, context: zmq.Context | None = None, hwm: int = 1000):
        self._sock = (context or zmq.Context.instance()).socket(zmq.PUSH)
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        self._sock.setsockopt(zmq.LINGER, 5000)
        self._sock.connect(url)

    def send(self, batch: TransitionBatch, block: bool = True) -> bool:
        try:
            self._sock.send(encode(batch), 0 if block else zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def close(self) -> None:
        self._sock.close()
