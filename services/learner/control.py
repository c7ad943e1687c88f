"""Live settings over ZeroMQ: the learner's control endpoint and its typed client.

    client = ControlClient("tcp://127.0.0.1:5559")
    client.get()                        # {name: value} of every live setting
    client.set(lr=0.0005, n_step=3)     # validated by the learner; ControlError on a bad value
    client.rollback()                   # to the newest healthy checkpoint; rollback(1200): to step 1200's

Who may steer: "set" and "rollback" carry the learner's control token, a random secret the learner writes at
start to CONTROL_TOKEN_FILE (default: CHECKPOINT_DIR/control-token, mode 0600) unless the file
already holds one (a file you supply, e.g. a mounted secret).  Whoever can read it may change settings;
"get" is open.  The client reads the same file (`control_token_path()`), or takes `token=`.

The server is served by the learner's own loop (`serve_pending()` when `sock` is readable, at
most MAX_REQUESTS_PER_TURN a turn; requests over SMALL_MESSAGE_BYTES cut the sender's connection).  The
client raises `ControlError` (reason "refused", detail: the learner's why) or `ControlTimeout`.
"""
from __future__ import annotations

import hmac
import logging
import os
import secrets
from pathlib import Path
from typing import Callable, Mapping

import zmq

from tempest_common.config import ConfigError
from tempest_common.limited_log import LimitedLog
from tempest_common.messages import ControlReply, ControlRequest
from tempest_common.request_client import RequestClient, RequestError, RequestTimeout
from tempest_common.socket_limits import SMALL_MESSAGE_BYTES, limit_message_size, watch_dropped_connections
from tempest_common.wire import MessageError, decode, encode

log = logging.getLogger("learner.control")


class ControlError(RequestError):
    pass


class ControlTimeout(RequestTimeout):
    pass


TOKEN_FILE_NAME = "control-token"


def control_token_path(environ: Mapping[str, str] | None = None) -> Path:
    """CONTROL_TOKEN_FILE, else CHECKPOINT_DIR (default run/checkpoints) / control-token: the same
    rule for the learner that writes the token and for every client that reads it."""
    env = os.environ if environ is None else environ
    explicit = env.get("CONTROL_TOKEN_FILE", "")
    return Path(explicit) if explicit else Path(env.get("CHECKPOINT_DIR") or "run/checkpoints") / TOKEN_FILE_NAME


def read_control_token(path: Path) -> str:
    """The token in `path` ("" when the file is missing or unreadable: "set" will be refused)."""
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def ensure_control_token(path: Path) -> str:
    """The learner's side: keep the token already in `path`, else write a new random one (0600)."""
    token = read_control_token(path)
    if token:
        return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)   # an empty file that was already there keeps its mode otherwise
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


class ControlServer:
    """Answers ControlRequests on a ROUTER; `get_settings()`, `set_settings(changes)` (which
    raises ConfigError on a bad change) and `rollback(step or None)` (which raises LookupError
    when there is no checkpoint to go back to; its reply's settings are what it returns) belong
    to the learner.  "set" and "rollback" must carry `token` (compared in constant time); a
    refusal calls `on_refused(reason)`, reason one of REFUSE_REASONS.  Inbound messages over
    SMALL_MESSAGE_BYTES cut the sender's connection (`on_dropped_connection()` is called, from a
    monitor thread)."""

    REFUSE_REASONS = ("unauthorized", "bad_setting", "no_checkpoint")
    # One turn of the learner's loop answers at most this many: a flood of requests delays
    # training by a bounded amount per turn instead of starving it.
    MAX_REQUESTS_PER_TURN = 64
    PEER_QUEUE = 100

    def __init__(self, bind: str, get_settings: Callable[[], dict], set_settings: Callable[[dict], dict],
                 on_malformed: Callable[[str], None], context: zmq.Context | None = None, *, token: str,
                 on_refused: Callable[[str], None] = lambda reason: None,
                 on_dropped_connection: Callable[[], None] | None = None,
                 rollback: Callable[[int | None], dict] | None = None):
        if not token:
            raise ValueError("a control server needs a non-empty token")
        self.sock = (context or zmq.Context.instance()).socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        limit_message_size(self.sock, SMALL_MESSAGE_BYTES)
        self.sock.setsockopt(zmq.RCVHWM, self.PEER_QUEUE)   # what one flooding client can park here
        self.sock.bind(bind)
        if on_dropped_connection is not None:
            watch_dropped_connections(self.sock, on_dropped_connection, "control")
        self.get_settings, self.set_settings, self.on_malformed = get_settings, set_settings, on_malformed
        self.on_refused, self.rollback = on_refused, rollback
        self._token = token.encode()
        self._log = LimitedLog(log)

    def serve_pending(self, limit: int = MAX_REQUESTS_PER_TURN) -> int:
        """Answer up to `limit` waiting requests; returns how many were answered."""
        for served in range(limit):
            try:
                *envelope, payload = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return served
            self.sock.send_multipart([*envelope, encode(self._answer(payload))])
        return limit

    def _authorized(self, token: str) -> bool:
        return hmac.compare_digest(token.encode("utf-8", "replace"), self._token)

    def _answer(self, payload: bytes) -> ControlReply:
        try:
            req = decode(payload, expect=ControlRequest)
        except MessageError as exc:
            self.on_malformed(exc.reason)
            return ControlReply(0, False, {}, f"{exc.reason}: {exc}")
        if req.op == "get":
            return ControlReply(req.request_id, True, self.get_settings(), None)
        if not self._authorized(req.token):
            self.on_refused("unauthorized")
            names = ", ".join(sorted(str(k)[:40] for k in req.settings)[:8])
            self._log.warning("unauthorized", "refused a control %s of %s: wrong or missing token", req.op,
                              names or "nothing")
            return ControlReply(req.request_id, False, {},
                                f"unauthorized: {req.op} needs the learner's control token (CONTROL_TOKEN_FILE)")
        if req.op == "rollback":
            return self._rollback(req)
        try:
            return ControlReply(req.request_id, True, self.set_settings(dict(req.settings)), None)
        except ConfigError as exc:
            self.on_refused("bad_setting")
            self._log.warning("bad_setting", "refused setting change %.300s: %.300s", dict(req.settings), exc)
            return ControlReply(req.request_id, False, self.get_settings(), str(exc))

    def _rollback(self, req: ControlRequest) -> ControlReply:
        step = req.settings.get("step")
        if self.rollback is None or (step is not None and (type(step) is not int or step < 0)):
            self.on_refused("bad_setting")
            why = "this server does not roll back" if self.rollback is None else \
                f"rollback step must be a whole number >= 0, got {step!r:.40}"
            return ControlReply(req.request_id, False, {}, f"bad_setting: {why}")
        try:
            return ControlReply(req.request_id, True, self.rollback(step), None)
        except LookupError as exc:
            self.on_refused("no_checkpoint")
            self._log.warning("no_checkpoint", "refused a rollback: %.300s", exc)
            return ControlReply(req.request_id, False, {}, f"no_checkpoint: {exc}"[:4000])

    def close(self) -> None:
        self.sock.close(0)


class ControlClient:
    def __init__(self, url: str, timeout_s: float = 10.0, context: zmq.Context | None = None,
                 token: str | None = None):
        """token: the learner's control token (None: read it from control_token_path())."""
        self.url, self.timeout_s = url, timeout_s
        self.token = read_control_token(control_token_path()) if token is None else token
        self._rpc = RequestClient(url, ControlReply, context, peer="learner", error=ControlError,
                                  timeout=ControlTimeout)

    def _call(self, op: str, settings: dict) -> dict:
        rid = self._rpc.new_id()
        self._rpc.send(ControlRequest(rid, op, settings, self.token))
        reply = self._rpc.receive(rid, self.timeout_s)
        if not reply.ok:
            raise ControlError("refused", reply.error or "no reason given")
        return dict(reply.settings)

    def get(self) -> dict:
        return self._call("get", {})

    def set(self, **changes) -> dict:
        return self._call("set", changes)

    def rollback(self, step: int | None = None) -> dict:
        """Roll the learner back to its run's newest healthy checkpoint, or to the one at `step`;
        {from_step, to_step, checkpoint, healthy, weights_version}.  ControlError "refused" with
        the learner's why ("no_checkpoint: ...") when there is none."""
        return self._call("rollback", {} if step is None else {"step": int(step)})

    def close(self) -> None:
        self._rpc.close()
