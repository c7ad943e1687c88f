"""Size limits on the sockets a service receives on, and a count of the connections they cut.

    limit_message_size(sock, max_bytes)            # before bind/connect: ZMQ_MAXMSGSIZE
    watch_dropped_connections(sock, counter)        # counter.inc() on every cut connection

ZeroMQ enforces ZMQ_MAXMSGSIZE by dropping the *connection* that sent an oversized message, not
the message, and the application never sees it (the peer reconnects by itself).  So the limit
protects memory (the message is never assembled), and the socket monitor is the only way to see
that it happened: `watch_dropped_connections` counts the socket's DISCONNECTED events from a
daemon thread.  A peer that simply goes away is counted too (ZeroMQ reports both the same way):
the counter says "connections cut", and a rising count with steady peers means oversized or
corrupt input.  Set each limit above the largest legitimate message (`max_encoded_size`).
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

from .messages import Message
from .wire import encode

log = logging.getLogger("socket_limits")
SMALL_MESSAGE_BYTES = 64 * 1024      # control requests, heartbeats, episode summaries


def max_encoded_size(example: Message, margin: float = 1.25) -> int:
    """Bytes of `example` on the wire (build it at its largest legitimate size), with a margin."""
    return int(len(encode(example)) * margin) + 4096


def limit_message_size(sock: zmq.Socket, max_bytes: int) -> None:
    """Refuse (by cutting the connection) any inbound message over `max_bytes`; call before bind."""
    sock.setsockopt(zmq.MAXMSGSIZE, int(max_bytes))


def watch_dropped_connections(sock: zmq.Socket, on_drop: Callable[[], None], name: str = "") -> threading.Thread:
    """Call `on_drop()` for every connection ZeroMQ cuts on `sock` (an oversized message, a peer
    that left).  Must be called from the thread that owns `sock`; the monitor socket itself is
    only used by the returned daemon thread, which ends when `sock` is closed."""
    monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_MONITOR_STOPPED)

    def watch() -> None:
        try:
            while True:
                event = recv_monitor_message(monitor)
                if event["event"] == zmq.EVENT_MONITOR_STOPPED:
                    break
                on_drop()
        except zmq.ZMQError:   # the context was terminated
            pass
        finally:
            monitor.close(0)

    thread = threading.Thread(target=watch, name=f"monitor-{name or sock.type}", daemon=True)
    thread.start()
    return thread
