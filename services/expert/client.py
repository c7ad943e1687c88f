"""ExpertClient: the typed client of the expert service (DEALER to its ROUTER).

    client = ExpertClient("tcp://127.0.0.1:5556")
    actions = client.act(game_state_batch, timeout_ms=50)   # int16[B], or None on timeout

A late reply to an earlier request is discarded by request id, so a slow expert never answers
the wrong question.  A malformed reply raises `ExpertError` with the wire's reason.
"""
from __future__ import annotations

import itertools
import time

import numpy as np
import zmq

from tempest_common.game_state import GameState
from tempest_common.messages import ExpertReply, ExpertRequest
from tempest_common.wire import MessageError, decode, encode


class ExpertError(RuntimeError):
    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class ExpertClient:
    def __init__(self, url: str, context: zmq.Context | None = None, hwm: int = 100):
        self.url = url
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        self._sock.setsockopt(zmq.RCVHWM, hwm)
        self._sock.connect(url)
        self._poller = zmq.Poller()  # reused: Socket.poll builds a new Poller on every call
        self._poller.register(self._sock, zmq.POLLIN)
        self._ids = itertools.count(1)

    def act(self, states: GameState, timeout_ms: float) -> np.ndarray | None:
        """Joint action index per state of a batched GameState; None if no reply in time."""
        request_id = next(self._ids)
        try:
            self._sock.send(encode(ExpertRequest(request_id, states)), zmq.NOBLOCK)
        except zmq.Again:
            return None
        deadline = time.monotonic() + timeout_ms / 1000.0
        while (remaining := (deadline - time.monotonic()) * 1000.0) > 0:
            if not self._poller.poll(remaining):
                return None
            data = self._sock.recv()
            try:
                reply = decode(data, expect=ExpertReply)
            except MessageError as exc:
                raise ExpertError(f"malformed expert reply: {exc}", exc.reason) from exc
            if reply.request_id != request_id:
                continue  # a late answer to an earlier request
            if reply.error is not None:
                raise ExpertError(f"expert refused the request: {reply.error}", "error_reply")
            return reply.actions
        return None

    def close(self) -> None:
        self._sock.close(0)
