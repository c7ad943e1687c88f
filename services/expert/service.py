"""The expert service: a ROUTER that answers batched ExpertRequests with the rule-based policy.

Requests queued at the socket are decided together in one vectorised policy call (up to
EXPERT_MAX_BATCH states), so many workers cost little more than one.

Hostile input (README, "Hostile input") never stops it:
  - a malformed or wrong-version request gets an ExpertReply with `error` set ("reason: detail")
    and is counted by reason in tempest_expert_errors_total; so is a well-formed request over
    EXPERT_MAX_STATES states (too_many_states) and a message that is not [identity, payload]
    (bad_frames);
  - a message over `max_request_bytes(EXPERT_MAX_STATES)` never reaches the service: ZeroMQ cuts
    the sender's connection (ZMQ_MAXMSGSIZE), counted in tempest_expert_connections_dropped_total;
  - one turn of the loop takes at most MAX_MESSAGES_PER_TURN messages, so a flood cannot keep
    it from its stop flag, and each peer may queue at most ROUTER_RCVHWM messages in the service;
  - a request the rules choke on fails alone (policy_error), not the batch it was decided with;
    any other error in a turn is counted (internal_error) and the loop carries on;
  - rejects are logged one line per reason at most every LOG_EVERY_S seconds (with the count of
    the lines held back), so a flood cannot fill the disk.
"""
from __future__ import annotations

import logging
import threading
import time

import msgpack
import numpy as np
import zmq

from tempest_common.game_state import FIELD_SPECS, GameState
from tempest_common.limited_log import LimitedLog
from tempest_common.messages import ExpertReply, ExpertRequest
from tempest_common.socket_limits import limit_message_size, max_encoded_size, watch_dropped_connections
from tempest_common.wire import MessageError, decode, encode

from .config import ExpertConfig
from .metrics import ExpertMetrics
from .policy import expert_actions

log = logging.getLogger("expert.service")

MAX_MESSAGES_PER_TURN = 256   # messages taken from the socket per loop turn (valid or not)
ROUTER_RCVHWM = 100           # messages one peer may queue in the service (a worker has 1 out)
LOG_EVERY_S = 10.0            # at most one reject line per reason this often
MAX_DETAIL = 300              # characters of a reject's detail echoed in replies and logs


def max_request_bytes(max_states: int) -> int:
    """The ROUTER's ZMQ_MAXMSGSIZE: the encoded size of the largest legitimate request (max_states
    states), with a margin; anything larger cuts the sender's connection."""
    states = GameState(**{name: np.zeros((max_states, *shape), dtype) for name, (dtype, shape) in FIELD_SPECS.items()})
    return max_encoded_size(ExpertRequest(-(2 ** 63), states))


class ExpertService:
    def __init__(self, cfg: ExpertConfig, metrics: ExpertMetrics | None = None, context: zmq.Context | None = None):
        self.cfg = cfg
        self.metrics = metrics or ExpertMetrics()
        self._ctx = context or zmq.Context.instance()
        self.max_request_bytes = max_request_bytes(cfg.max_states)
        self.sock = self._ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 0)  # a client that left is not an error
        self.sock.setsockopt(zmq.RCVHWM, ROUTER_RCVHWM)
        limit_message_size(self.sock, self.max_request_bytes)
        self._watcher = watch_dropped_connections(self.sock, self.metrics.connections_dropped.inc, "expert")
        self.sock.bind(cfg.bind)
        self._stop = threading.Event()
        self._rejects = LimitedLog(log, every_s=LOG_EVERY_S)

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        log.info("expert serving on %s (at most %d states, %d bytes a request)", self.cfg.bind,
                 self.cfg.max_states, self.max_request_bytes)
        poller = zmq.Poller()  # one poller for the loop: Socket.poll builds a new one per call
        poller.register(self.sock, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                if poller.poll(200):
                    try:
                        self._serve_queued()
                    except Exception as exc:  # never let one turn kill the service
                        self.metrics.errors.labels(reason="internal_error").inc()
                        self._rejects.warning("internal_error", "error serving expert requests: %s", exc,
                                              exc_info=True)
        finally:
            self.sock.close(0)

    def _serve_queued(self) -> None:
        """Take the queued requests (up to max_batch states and MAX_MESSAGES_PER_TURN messages),
        decide them in one call, reply.

        Called when a request is waiting.  Everything not needed for the replies (batch metrics)
        happens after they are sent, while the clients decode them."""
        t0 = time.perf_counter()
        pending: list[tuple[list[bytes], ExpertRequest]] = []
        n_states = 0
        for _ in range(MAX_MESSAGES_PER_TURN):
            if n_states >= self.cfg.max_batch:
                break
            # ask whether another request is queued rather than catch zmq.Again from a recv
            # (the exception is the common case with one client, and costs more than the ask)
            if pending and not self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                break
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            accepted = self._accept(frames, t0)
            if accepted is not None:
                pending.append(accepted)
                n_states += len(accepted[1].states)
        if not pending:
            return
        results = self._decide(pending, n_states)
        decided = n_states
        for (envelope, req), actions in zip(pending, results):
            if isinstance(actions, Exception):
                decided -= len(req.states)
                self.metrics.errors.labels(reason="policy_error").inc()
                self._reply(envelope, ExpertReply.failure(req.request_id, f"policy_error: {_short(actions)}"), t0)
            else:
                self._reply(envelope, ExpertReply(req.request_id, actions, None), t0)
        self.metrics.batch_states.observe(n_states)
        self.metrics.decisions.inc(decided)

    def _accept(self, frames: list[bytes], t0: float) -> tuple[list[bytes], ExpertRequest] | None:
        """(envelope, request) of a well-formed request within the limits; else answer, count, None."""
        if not (len(frames) == 2 or len(frames) == 3 and frames[1] == b""):  # DEALER / REQ framing
            self._refuse(frames[:1], 0, "bad_frames", f"{len(frames) - 1} frames after the routing id, "
                                                      "expected one message (DEALER) or an empty frame and one (REQ)", t0)
            return None
        envelope, payload = frames[:-1], frames[-1]
        try:
            req = decode(payload, expect=ExpertRequest)
        except MessageError as exc:
            rid = 0 if exc.reason == "not_msgpack" else _request_id(payload)
            self._refuse(envelope, rid, exc.reason, exc.detail, t0)
            return None
        n = len(req.states)
        if n > self.cfg.max_states:
            self._refuse(envelope, req.request_id, "too_many_states",
                         f"{n} states in one request, at most EXPERT_MAX_STATES={self.cfg.max_states}", t0)
            return None
        return envelope, req

    def _decide(self, pending: list[tuple[list[bytes], ExpertRequest]], n_states: int) -> list:
        """Actions per pending request (an Exception for a request the rules failed on)."""
        try:
            states = pending[0][1].states if len(pending) == 1 else GameState(**{
                name: np.concatenate([getattr(r.states, name) for _, r in pending])
                for name in pending[0][1].states.to_arrays()})
            actions = expert_actions(states).astype(np.int16, copy=False)
        except Exception:  # find the request(s) the rules choke on: the others still get answers
            self._rejects.warning("policy_error", "policy failed on a batch of %d states (%d requests)",
                                  n_states, len(pending), exc_info=True)
            out: list = []
            for _, req in pending:
                try:
                    out.append(expert_actions(req.states).astype(np.int16, copy=False))
                except Exception as exc:
                    out.append(exc)
            return out
        if len(pending) == 1:
            return [actions]
        return np.split(actions, np.cumsum([len(r.states) for _, r in pending])[:-1])

    def _refuse(self, envelope: list[bytes], request_id: int, reason: str, detail: str, t0: float) -> None:
        self.metrics.errors.labels(reason=reason).inc()
        detail = _short(detail)
        self._rejects.warning(reason, "rejected an expert request (%s): %s", reason, detail)
        self._reply(envelope, ExpertReply.failure(request_id, f"{reason}: {detail}"), t0)

    def _reply(self, envelope: list[bytes], reply: ExpertReply, t0: float) -> None:
        self.sock.send_multipart([*envelope, encode(reply)])
        self.metrics.requests.inc()
        self.metrics.latency.observe(time.perf_counter() - t0)


def _short(text) -> str:
    text = str(text)
    return text if len(text) <= MAX_DETAIL else text[:MAX_DETAIL] + f"... ({len(text)} characters)"


def _request_id(payload: bytes) -> int:
    """Best effort: echo the id of a request we could not decode, so the client can match it."""
    try:
        obj = msgpack.unpackb(payload, raw=False)
        rid = obj.get("request_id", 0) if isinstance(obj, dict) else 0
        return rid if isinstance(rid, int) and not isinstance(rid, bool) and -2**63 <= rid < 2**63 else 0
    except Exception:
        return 0
