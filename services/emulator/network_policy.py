"""The network in play: the worker acts with the learner's latest published weights.

A SUB socket (conflated: only the newest message is kept) receives WeightsSchedule messages;
each new version rebuilds the network on the CPU (one thread: the worker shares its cores with
MAME) and carries the learner's schedule (expert ratio, epsilon, evaluation share and epsilon).
Acting costs a GameState decode, a state-vector encode and one forward pass on the tick's
critical path (see the README for the measured cost).
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import zmq

from tempest_common.game_state import decode_ram
from tempest_common.messages import WeightsSchedule
from tempest_common.network import network_from_state_dict
from tempest_common.state_vector import encode_state
from tempest_common.wire import MessageError, decode

from .metrics import WorkerMetrics

log = logging.getLogger("emulator.network")


class NetworkPolicy:
    def __init__(self, addr: str, metrics: WorkerMetrics, context: zmq.Context | None = None):
        self.metrics = metrics
        self.sock = None
        if addr:
            self.sock = (context or zmq.Context.instance()).socket(zmq.SUB)
            self.sock.setsockopt(zmq.CONFLATE, 1)
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.setsockopt(zmq.SUBSCRIBE, b"")
            self.sock.connect(addr)
        self.net: torch.nn.Module | None = None
        self.version = 0
        torch.set_num_threads(1)

    @property
    def ready(self) -> bool:
        return self.net is not None

    def poll(self) -> WeightsSchedule | None:
        """Take the newest published weights, if any arrived; returns the new schedule."""
        if self.sock is None:
            return None
        try:
            payload = self.sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return None
        try:
            msg = decode(payload, expect=WeightsSchedule)
            net = network_from_state_dict(msg.weights)
        except MessageError as exc:
            self.metrics.malformed.labels(peer="learner", reason=exc.reason).inc()
            log.warning("ignored malformed weights: %s", exc)
            return None
        except (KeyError, RuntimeError, ValueError, IndexError) as exc:
            self.metrics.malformed.labels(peer="learner", reason="bad_weights").inc()
            log.warning("ignored weights that do not form a network: %s", exc)
            return None
        if msg.version <= self.version and self.net is not None:
            return None
        if self.net is None:
            log.info("network weights arrived (version %d): the network now plays its turns", msg.version)
        self.net, self.version = net, msg.version
        self.metrics.weights_version.set(msg.version)
        return msg

    @torch.inference_mode()
    def act(self, ram: np.ndarray, prev_ram: np.ndarray | None) -> int:
        vector = encode_state(decode_ram(ram), decode_ram(prev_ram) if prev_ram is not None else None)
        q = self.net(torch.from_numpy(vector)[None])  # [1, A]
        return int(q.argmax(dim=1).item())

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
