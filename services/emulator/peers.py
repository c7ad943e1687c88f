"""The worker's ZeroMQ peers: PUSH to replay and learner, the expert client.

Sends never block the game loop: each PUSH socket buffers up to SEND_HWM messages while its peer
is away (a replay restart loses nothing), and a message beyond that is dropped and counted in
tempest_messages_dropped_total{peer}; `try_send` also says why, for the worker's transition
accounting (tempest_emulator_transitions_dropped_total{reason}).
"""
from __future__ import annotations

import logging

import zmq

from tempest_common.messages import Message
from tempest_common.wire import encode

from ..expert.client import ExpertClient
from .metrics import WorkerMetrics

log = logging.getLogger("emulator.peers")


class Peers:
    def __init__(self, replay_addr: str, learner_addr: str, expert_addr: str, hwm: int,
                 metrics: WorkerMetrics, context: zmq.Context | None = None):
        self._ctx = context or zmq.Context.instance()
        self.metrics = metrics
        self._push = {name: self._push_socket(addr, hwm)
                      for name, addr in (("replay", replay_addr), ("learner", learner_addr)) if addr}
        self.expert = ExpertClient(expert_addr, self._ctx) if expert_addr else None
        self._warned: set[str] = set()

    def _push_socket(self, addr: str, hwm: int) -> zmq.Socket:
        sock = self._ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.LINGER, 2000)  # on stop, give queued batches 2 s to leave
        sock.connect(addr)
        return sock

    def send(self, peer: str, msg: Message) -> bool:
        return self.try_send(peer, msg) is None

    def try_send(self, peer: str, msg: Message) -> str | None:
        """Send without blocking: None when ZeroMQ took the message, else the reason it was
        dropped (counted): "no_peer" (no address configured) or "queue_full" (SEND_HWM messages
        already wait: the peer is away or slower than this worker)."""
        sock = self._push.get(peer)
        if sock is None:
            self.metrics.dropped.labels(peer=peer).inc()
            return "no_peer"
        try:
            sock.send(encode(msg), zmq.NOBLOCK)
            self._warned.discard(peer)
            return None
        except zmq.Again:
            self.metrics.dropped.labels(peer=peer).inc()
            if peer not in self._warned:
                log.warning("%s is not taking messages (queue full or peer away): dropping and counting", peer)
                self._warned.add(peer)
            return "queue_full"

    def close(self) -> None:
        for sock in self._push.values():
            sock.close()
        if self.expert is not None:
            self.expert.close()
