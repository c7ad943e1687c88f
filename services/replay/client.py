"""ReplayClient: the typed client of the replay service.

    replay = ReplayClient("tcp://127.0.0.1:5560")
    batch = replay.sample(16384, n_step=5, gamma=0.995, prioritized=True, beta=0.4)   # SampleReply
    replay.update_priorities(batch.index, new_priorities)
    replay.reset_max_priority()        # new rows at the initial priority again (after a rollback)

`send_sample()` / `receive()` split a request from its reply so a learner can keep the next batch
in flight while it trains on the current one; a learner that polls `sock` itself reads replies
with `arrived()` and checks each with `check()`.  Transition batches go to the replay's PULL
address with `TransitionSender`.  A refusal raises `ReplayRefused` with its reason ("too_small",
"rate_limited", "bad_request", "busy": try again later, "too_large": a priority update over 2^20
rows, or a wire reason); a malformed reply `ReplayError`; no reply in time `ReplayTimeout`.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import zmq

from tempest_common.messages import Ack, PriorityReset, PriorityUpdate, SampleReply, SampleRequest, TransitionBatch
from tempest_common.request_client import RequestClient, RequestError, RequestTimeout, split_reason
from tempest_common.wire import encode

from .limits import largest_sample_reply_bytes


class ReplayError(RequestError):
    """A malformed reply from the replay (reason: the wire's); base of ReplayRefused."""


class ReplayRefused(ReplayError):
    """The replay refused the request; `reason` is its word for why."""


class ReplayTimeout(RequestTimeout):
    pass


class ReplayClient:
    def __init__(self, url: str, context: zmq.Context | None = None, timeout_s: float = 30.0,
                 state_dim: int | None = None):
        """state_dim: when given, a reply larger than the largest legitimate sample at this state
        size cuts the connection instead of being taken in (socket_limits.py)."""
        self.url = url
        self.timeout_s = timeout_s
        # copy=False: a sample reply is ~13 MB, decoded in ZeroMQ's buffer rather than copied out first
        self._rpc = RequestClient(url, (SampleReply, Ack), context, peer="replay", error=ReplayError,
                                  timeout=ReplayTimeout, copy=False,
                                  max_bytes=None if state_dim is None else largest_sample_reply_bytes(state_dim))
        self.sock = self._rpc.sock

    def send_sample(self, batch_size: int, n_step: int, gamma: float, prioritized: bool = True,
                    beta: float = 0.4, wait_s: float = 0.0) -> int:
        rid = self._rpc.new_id()
        self._rpc.send(SampleRequest(rid, batch_size, n_step, gamma, prioritized, beta, wait_s))
        return rid

    def receive(self, request_id: int, timeout_s: float | None = None):
        """The reply to `request_id` (SampleReply or Ack); raises ReplayRefused / ReplayError /
        ReplayTimeout (after which the request is forgotten)."""
        return self.check(self._rpc.receive(request_id, self.timeout_s if timeout_s is None else timeout_s))

    def arrived(self) -> Iterator[SampleReply | Ack]:
        """Replies already here, unchecked, without waiting; raises ReplayError on a malformed one."""
        return self._rpc.arrived()

    def forget(self, request_id: int) -> None:
        """Drop the reply to `request_id` when it comes."""
        self._rpc.forget(request_id)

    def sample(self, batch_size: int, n_step: int, gamma: float, prioritized: bool = True,
               beta: float = 0.4, wait_s: float = 0.0) -> SampleReply:
        rid = self.send_sample(batch_size, n_step, gamma, prioritized, beta, wait_s)
        return self.receive(rid, self.timeout_s + wait_s)

    def send_priorities(self, index: np.ndarray, priority: np.ndarray, await_ack: bool = True) -> int:
        """Send new priorities; with await_ack=False the ack is dropped whenever it arrives."""
        rid = self._rpc.new_id()
        self._rpc.send(PriorityUpdate(rid, np.asarray(index, np.uint64), np.asarray(priority, np.float32)),
                       await_reply=await_ack)
        return rid

    def update_priorities(self, index: np.ndarray, priority: np.ndarray) -> None:
        self.receive(self.send_priorities(index, priority))

    def send_max_priority_reset(self, await_ack: bool = True) -> int:
        """Ask the replay to forget its maximum priority (PriorityReset); with await_ack=False the
        ack is dropped whenever it arrives."""
        rid = self._rpc.new_id()
        self._rpc.send(PriorityReset(rid), await_reply=await_ack)
        return rid

    def reset_max_priority(self) -> None:
        self.receive(self.send_max_priority_reset())

    @staticmethod
    def check(reply: SampleReply | Ack) -> SampleReply | Ack:
        """`reply`, or ReplayRefused when it carries the replay's "reason: detail" error."""
        if reply.error is not None:
            raise ReplayRefused(*split_reason(reply.error))
        return reply

    def close(self) -> None:
        self._rpc.close()


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
