"""The network in play: the worker acts with the learner's latest published weights.

A SUB socket (conflated: only the newest message is kept) receives WeightsSchedule messages;
each new version rebuilds the network on the CPU (one thread: the worker shares its cores with
MAME) and carries the learner's schedule (expert ratio, epsilon, evaluation share and epsilon).
Acting costs a GameState decode, a state-vector encode and one forward pass on the tick's
critical path (see the README for the measured cost).

Weights are checked before they play: a message over WEIGHTS_MAX_BYTES never arrives (ZeroMQ
cuts the connection: tempest_connections_dropped_total{socket="weights"}), and weights that do
not form a network of this state size and action count, or hold NaN/inf, are refused and counted
(tempest_malformed_messages_total{peer="learner"}): the worker keeps its current network.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import zmq

from tempest_common.actions import NUM_ACTIONS
from tempest_common.game_state import decode_ram
from tempest_common.messages import WeightsSchedule
from tempest_common.network import network_from_state_dict
from tempest_common.socket_limits import limit_message_size, watch_dropped_connections
from tempest_common.state_vector import STATE_SIZE, encode_state
from tempest_common.wire import MessageError, decode

from .metrics import WorkerMetrics

log = logging.getLogger("emulator.network")
# The largest weights message a worker takes: 64M float32 parameters (the default network has
# ~0.5M); anything larger cuts the connection rather than being assembled in memory.
WEIGHTS_MAX_BYTES = 256 * 1024 * 1024


class NetworkPolicy:
    def __init__(self, addr: str, metrics: WorkerMetrics, context: zmq.Context | None = None):
        self.metrics = metrics
        self.sock = None
        if addr:
            self.sock = (context or zmq.Context.instance()).socket(zmq.SUB)
            self.sock.setsockopt(zmq.CONFLATE, 1)
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.setsockopt(zmq.SUBSCRIBE, b"")
            limit_message_size(self.sock, WEIGHTS_MAX_BYTES)
            watch_dropped_connections(self.sock, metrics.connections_dropped.labels(socket="weights").inc, "weights")
            self.sock.connect(addr)
        self.net: torch.nn.Module | None = None
        self.version = 0
        self.incarnation = ""   # the publishing learner's (WeightsSchedule.incarnation)
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
            if (net.state_dim, net.num_actions) != (STATE_SIZE, NUM_ACTIONS):
                raise ValueError(f"a network for {net.state_dim} inputs and {net.num_actions} actions, "
                                 f"not {STATE_SIZE} and {NUM_ACTIONS}")
            if not all(np.isfinite(w).all() for w in msg.weights.values()):
                self.metrics.malformed.labels(peer="learner", reason="nonfinite").inc()
                log.warning("ignored weights version %d holding NaN/inf", msg.version)
                return None
        except MessageError as exc:
            self.metrics.malformed.labels(peer="learner", reason=exc.reason).inc()
            log.warning("ignored malformed weights: %s", exc)
            return None
        except (KeyError, RuntimeError, ValueError, IndexError) as exc:
            self.metrics.malformed.labels(peer="learner", reason="bad_weights").inc()
            log.warning("ignored weights that do not form a network: %s", exc)
            return None
        if self.net is not None and msg.incarnation == self.incarnation and msg.version <= self.version:
            return None   # an older copy from the same learner (versions only grow within one)
        if self.net is None:
            log.info("network weights arrived (version %d): the network now plays its turns", msg.version)
        elif msg.incarnation != self.incarnation:
            # a restarted learner, or another run: its versions may start below ours, and waiting
            # for them to catch up would leave this worker playing a dead learner's network
            self.metrics.learner_incarnations.inc()
            log.info("weights from a new learner incarnation %s (was %s): taking its version %d (had %d)",
                     msg.incarnation, self.incarnation, msg.version, self.version)
        self.net, self.version, self.incarnation = net, msg.version, msg.incarnation
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
