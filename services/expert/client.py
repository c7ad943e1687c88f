"""ExpertClient: the typed client of the expert service (DEALER to its ROUTER).

    client = ExpertClient("tcp://127.0.0.1:5556")
    actions = client.act(game_state_batch, timeout_ms=50)   # int16[B], or None on timeout

`start_local_expert()` runs the service as a child process (the evaluate command does).
A late reply to an earlier request is dropped by request id, so a slow expert never answers
the wrong question.  `ExpertError` is raised for a malformed reply (reason: the wire's) and for
the expert's own error reply (reason "error_reply", detail: the expert's error).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import numpy as np
import zmq

from tempest_common.game_state import GameState, decode_ram
from tempest_common.messages import ExpertReply, ExpertRequest
from tempest_common.request_client import RequestClient, RequestError, RequestTimeout


class ExpertError(RequestError):
    pass


class ExpertClient:
    def __init__(self, url: str, context: zmq.Context | None = None, hwm: int = 100):
        self.url = url
        self._rpc = RequestClient(url, ExpertReply, context, peer="expert", error=ExpertError, hwm=hwm)

    def act(self, states: GameState, timeout_ms: float) -> np.ndarray | None:
        """Joint action index per state of a batched GameState; None if no reply in time."""
        rpc = self._rpc
        request_id = rpc.new_id()
        # NOBLOCK: on the emulator's per-tick path a full queue (expert gone) is a miss, not a stall
        if not rpc.send(ExpertRequest(request_id, states), noblock=True):
            return None
        try:
            reply = rpc.receive(request_id, timeout_ms / 1000.0)
        except RequestTimeout:
            return None
        if reply.error is not None:
            raise ExpertError("error_reply", reply.error)
        return reply.actions

    def close(self) -> None:
        self._rpc.close()


def start_local_expert(timeout_s: float = 30.0) -> tuple[subprocess.Popen, str]:
    """The expert service as a child process on a free loopback port, answering before this
    returns: (process, its address).  The caller terminates the process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        addr = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    proc = subprocess.Popen([sys.executable, "-m", "services.expert.main"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ, EXPERT_BIND=addr, METRICS_PORT="0"))
    client, deadline = ExpertClient(addr), time.monotonic() + timeout_s
    try:
        while client.act(decode_ram(np.zeros((1, 1024), np.uint8)), timeout_ms=500) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the expert service did not start (python -m services.expert.main)")
    finally:
        client.close()
    return proc, addr
