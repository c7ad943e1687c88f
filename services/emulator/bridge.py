"""The worker's end of the Lua bridge (see lua/bridge.lua for the byte layout).

MAME connects to a loopback port the worker listens on; every game tick it sends an 8-byte
header and RAM $0000-$03FF, and the worker answers every message with a 4-byte reply, in order.
MAME waits for the reply only in play and zoom; outside them it drives the game itself and reads
the reply a frame or two later (the message's `awaited` is False), so a save or load sent then
takes effect late, confirmed by the flags of a later message (session.py).  Each reply is
preceded by a doorbell byte on a named pipe: MAME polls its (non-blocking) socket briefly, then sleeps on the
pipe, so a slow reply costs it no CPU; closing the pipe tells MAME at once that its worker is
gone.  Replying is on MAME's critical path, so callers reply first and do their bookkeeping
afterwards.
"""
from __future__ import annotations

import errno
import os
import shutil
import socket
import struct
import tempfile
import time
from typing import NamedTuple

import numpy as np

from tempest_common.ram_map import RAM_SIZE

HEADER = struct.Struct("<ccBBI")
MESSAGE_BYTES = HEADER.size + RAM_SIZE
REPLY = struct.Struct("<BBbB")

CMD_ACT, CMD_SAVE, CMD_LOAD, CMD_EXIT = 0, 1, 2, 3
FLAG_LOADED, FLAG_SAVED, FLAG_NOT_AWAITED = 1, 2, 4


class BridgeClosed(ConnectionError):
    """MAME went away, broke the protocol, or stopped talking."""


class BridgeTimeout(BridgeClosed):
    """Nothing arrived within the timeout (MAME may still be alive: busy, starting or stalled)."""


class TickMessage(NamedTuple):
    kind: str           # "H" hello or "S" state
    flags: int          # FLAG_LOADED / FLAG_SAVED / FLAG_NOT_AWAITED
    video_frame: int    # MAME video frames since it started
    ram: np.ndarray     # uint8[1024], a copy owned by the caller

    loaded = property(lambda self: bool(self.flags & FLAG_LOADED))
    saved = property(lambda self: bool(self.flags & FLAG_SAVED))
    awaited = property(lambda self: not self.flags & FLAG_NOT_AWAITED)   # MAME waits for its reply


class BridgeServer:
    """Listens on 127.0.0.1 (port 0 picks a free one) and serves one MAME connection at a time."""

    def __init__(self, port: int = 0):
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(1)
        self.port = self._listener.getsockname()[1]
        self._fifo_dir = tempfile.mkdtemp(prefix="tempest-bridge-")
        self.reply_fifo = os.path.join(self._fifo_dir, "replies")
        os.mkfifo(self.reply_fifo, 0o600)
        self._reply_fd: int | None = None
        self._conn: socket.socket | None = None
        self._timeout: float | None = None
        self._buf = bytearray(MESSAGE_BYTES)
        self._view = memoryview(self._buf)

    def accept(self, timeout: float) -> TickMessage:
        """Wait for MAME to connect; returns its hello message."""
        self.drop_connection()
        self._listener.settimeout(timeout)
        try:
            conn, _ = self._listener.accept()
        except socket.timeout as exc:
            raise BridgeTimeout(f"MAME did not connect within {timeout:.0f} s") from exc
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._conn = conn
        self._timeout = None
        self._open_reply_pipe(timeout)
        return self.receive(timeout)

    def _open_reply_pipe(self, timeout: float) -> None:
        """Open the pipe's write end once MAME has opened the read end (ENXIO until then)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._reply_fd = os.open(self.reply_fifo, os.O_WRONLY | os.O_NONBLOCK)
                os.set_blocking(self._reply_fd, True)
                return
            except OSError as exc:
                if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                    raise BridgeClosed(f"MAME did not open the reply pipe: {exc}") from exc
                time.sleep(0.005)

    def receive(self, timeout: float) -> TickMessage:
        if self._conn is None:
            raise BridgeClosed("no MAME connection")
        if timeout != self._timeout:  # settimeout costs syscalls: only when it changes
            self._conn.settimeout(timeout)
            self._timeout = timeout
        got = 0
        try:
            while got < MESSAGE_BYTES:
                n = self._conn.recv_into(self._view[got:], MESSAGE_BYTES - got)
                if n == 0:
                    raise BridgeClosed("MAME closed the bridge connection")
                got += n
        except socket.timeout as exc:
            raise BridgeTimeout(f"no game tick from MAME for {timeout:.0f} s") from exc
        except OSError as exc:
            raise BridgeClosed(f"bridge connection failed: {exc}") from exc
        magic, kind, flags, _, frame = HEADER.unpack_from(self._buf)
        if magic != b"T" or kind not in (b"H", b"S"):
            raise BridgeClosed(f"bridge protocol error: header {bytes(self._buf[:8])!r}")
        ram = np.frombuffer(bytes(self._view[HEADER.size:]), dtype=np.uint8)
        return TickMessage(kind.decode(), flags, frame, ram)

    def reply(self, command: int = CMD_ACT, fire: bool = False, zap: bool = False, spinner: int = 0,
              slot: int = 0) -> None:
        """One reply; `slot` names the save state a save or load uses (0: the start of play)."""
        if self._reply_fd is None or self._conn is None:
            raise BridgeClosed("no MAME connection")
        try:
            os.write(self._reply_fd, b"\x01")  # ring first: a polling MAME never blocks on it
            self._conn.sendall(REPLY.pack(command, int(fire) | (int(zap) << 1), spinner, slot))
        except OSError as exc:  # EPIPE: MAME is gone
            raise BridgeClosed(f"bridge reply failed: {exc}") from exc

    def drop_connection(self) -> None:
        if self._reply_fd is not None:
            os.close(self._reply_fd)
            self._reply_fd = None
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def close(self) -> None:
        self.drop_connection()
        self._listener.close()
        shutil.rmtree(self._fifo_dir, ignore_errors=True)
