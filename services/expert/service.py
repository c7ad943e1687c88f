"""The expert service: a ROUTER that answers batched ExpertRequests with the rule-based policy.

Requests queued at the socket are decided together in one vectorised policy call (up to
EXPERT_MAX_BATCH states), so many workers cost little more than one.  A malformed or
wrong-version request gets an ExpertReply with `error` set and is counted by reason; the
service keeps serving.
"""
from __future__ import annotations

import logging
import threading
import time

import msgpack
import numpy as np
import zmq

from tempest_common.game_state import GameState
from tempest_common.messages import ExpertReply, ExpertRequest
from tempest_common.wire import MessageError, decode, encode

from .config import ExpertConfig
from .metrics import ExpertMetrics
from .policy import expert_actions

log = logging.getLogger("expert.service")


class ExpertService:
    def __init__(self, cfg: ExpertConfig, metrics: ExpertMetrics | None = None, context: zmq.Context | None = None):
        self.cfg = cfg
        self.metrics = metrics or ExpertMetrics()
        self._ctx = context or zmq.Context.instance()
        self.sock = self._ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 0)  # a client that left is not an error
        self.sock.bind(cfg.bind)
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        log.info("expert serving on %s", self.cfg.bind)
        poller = zmq.Poller()  # one poller for the loop: Socket.poll builds a new one per call
        poller.register(self.sock, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                if poller.poll(200):
                    self._serve_queued()
        finally:
            self.sock.close(0)

    def _serve_queued(self) -> None:
        """Take every queued request (up to max_batch states), decide them in one call, reply.

        Called when a request is waiting.  Everything not needed for the replies (batch metrics)
        happens after they are sent, while the clients decode them."""
        t0 = time.perf_counter()
        pending: list[tuple[list[bytes], ExpertRequest]] = []
        n_states = 0
        while n_states < self.cfg.max_batch:
            # ask whether another request is queued rather than catch zmq.Again from a recv
            # (the exception is the common case with one client, and costs more than the ask)
            if pending and not self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                break
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            envelope, payload = frames[:-1], frames[-1]
            try:
                req = decode(payload, expect=ExpertRequest)
            except MessageError as exc:
                self._reply(envelope, ExpertReply.failure(_request_id(payload), f"{exc.reason}: {exc}"), t0)
                self.metrics.errors.labels(reason=exc.reason).inc()
                log.warning("rejected expert request: %s", exc)
                continue
            pending.append((envelope, req))
            n_states += len(req.states)
        if not pending:
            return
        states = pending[0][1].states if len(pending) == 1 else GameState(**{
            name: np.concatenate([getattr(r.states, name) for _, r in pending]) for name in pending[0][1].states.to_arrays()})
        try:
            actions = expert_actions(states).astype(np.int16, copy=False)
        except Exception as exc:  # a state the rules choke on must not kill the service
            log.exception("policy failed on a batch of %d states", n_states)
            for envelope, req in pending:
                self._reply(envelope, ExpertReply.failure(req.request_id, f"policy_error: {exc}"), t0)
                self.metrics.errors.labels(reason="policy_error").inc()
            return
        offset = 0
        for envelope, req in pending:
            b = len(req.states)
            self._reply(envelope, ExpertReply(req.request_id, actions[offset:offset + b], None), t0)
            offset += b
        self.metrics.batch_states.observe(n_states)
        self.metrics.decisions.inc(n_states)

    def _reply(self, envelope: list[bytes], reply: ExpertReply, t0: float) -> None:
        self.sock.send_multipart([*envelope, encode(reply)])
        self.metrics.requests.inc()
        self.metrics.latency.observe(time.perf_counter() - t0)


def _request_id(payload: bytes) -> int:
    """Best effort: echo the id of a request we could not decode, so the client can match it."""
    try:
        obj = msgpack.unpackb(payload, raw=False)
        rid = obj.get("request_id", 0) if isinstance(obj, dict) else 0
        return rid if isinstance(rid, int) and not isinstance(rid, bool) and -2**63 <= rid < 2**63 else 0
    except Exception:
        return 0
