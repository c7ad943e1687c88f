"""ExpertClient: the typed client of the expert service (DEALER to its ROUTER).

    client = ExpertClient("tcp://127.0.0.1:5556")
    actions = client.act(game_state_batch, timeout_ms=50)   # int16[B], or None on timeout

A late reply to an earlier request is dropped by request id, so a slow expert never answers
the wrong question.  `ExpertError` is raised for a malformed reply (reason: the wire's) and for
the expert's own error reply (reason "error_reply", detail: the expert's error).
"""
from __future__ import annotations

import numpy as np
import zmq

from tempest_common.game_state import GameState
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
