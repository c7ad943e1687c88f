"""The doctor's link to the learner's control endpoint (services/learner/control.py): a
ControlClient whose token is read from the learner's token file each time it is used, since the
doctor may start before the learner writes it (a new client whenever the token changes)."""
from __future__ import annotations

from pathlib import Path

from services.learner.control import ControlClient, read_control_token


class TokenReadingControl:
    def __init__(self, addr: str, timeout_s: float, token_path: Path):
        self.addr, self.timeout_s, self.token_path = addr, timeout_s, token_path
        self._client: ControlClient | None = None
        self._token: str | None = None

    def _current(self) -> ControlClient:
        token = read_control_token(self.token_path)
        if self._client is None or token != self._token:
            if self._client is not None:
                self._client.close()
            self._client, self._token = ControlClient(self.addr, self.timeout_s, token=token), token
        return self._client

    def get(self) -> dict:
        return self._current().get()

    def set(self, **changes) -> dict:
        return self._current().set(**changes)

    def rollback(self, step: int | None = None) -> dict:
        return self._current().rollback(step)
