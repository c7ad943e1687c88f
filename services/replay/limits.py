"""What the replay accepts from a peer, and the bookkeeping that enforces it (docs/design.md,
"Hostile input"): a broken or hostile peer costs a counted, logged reject, never the service's
memory, its sum tree or its loop.

    MAX_SAMPLE_ROWS ... MAX_WAIT_S          request limits (service.py refuses beyond them)
    largest_transition_batch_bytes(d)       ZMQ_MAXMSGSIZE of the PULL socket
    largest_priority_update_bytes()         ZMQ_MAXMSGSIZE of the ROUTER socket
    largest_sample_reply_bytes(d)           ZMQ_MAXMSGSIZE of a ReplayClient (the learner's DEALER)
    RepliesInFlight                         bytes of sample replies ZeroMQ still holds
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import zmq

from tempest_common.messages import MAX_BATCH_ROWS, MAX_COUNTER, Message, PriorityUpdate, SampleReply, TransitionBatch
from tempest_common.socket_limits import max_encoded_size
from tempest_common.wire import encode

MAX_SAMPLE_ROWS = 1 << 16       # rows of one sample request: the learner's largest batch_size
MAX_N_STEP = 100
MAX_PRIORITY_ROWS = 1 << 20     # rows of one PriorityUpdate (the learner sends one sample's worth)
PRIORITY_CAP = 1e6              # higher priorities are set to this: one 1e38 would leave every other
                                # leaf below the float64 sum tree's resolution (never sampled again)
MAX_PARKED = 256                # sample requests waiting to be served; beyond that "busy" at once
MAX_WAIT_S = 60.0               # the longest a request waits, whatever its wait_s (inf included)
ROUTER_SNDHWM = 256             # replies queued per peer (a peer that never reads gets no more)
ROUTER_RCVHWM = 16              # requests queued per peer: up to 16 MB each, TCP pushes back beyond
SIZE_MARGIN = 1.25              # max_encoded_size's: a limit well above the largest legitimate message
HEADER_GROWTH = 1024            # bytes: msgpack headers of a large message over a 1-row one's


def _max_encoded_size_at(make: Callable[[int], Message], rows: int) -> int:
    """At least max_encoded_size(make(rows)), without building make(rows) (at STATE_DIM's maximum
    the largest transition batch would be 26 GB): the encoded size grows linearly in the rows,
    apart from msgpack headers (bin and int lengths) a few bytes longer per array at large sizes;
    HEADER_GROWTH covers those."""
    if rows <= 1024:
        return max_encoded_size(make(rows), SIZE_MARGIN)
    one, two = len(encode(make(1))), len(encode(make(2)))
    return int((one + (rows - 1) * (two - one) + HEADER_GROWTH) * SIZE_MARGIN) + 4096   # as max_encoded_size


def _zero_batch(state_dim: int) -> Callable[[int], TransitionBatch]:
    def make(rows: int) -> TransitionBatch:
        z = lambda dt: np.zeros(rows, dt)  # noqa: E731
        return TransitionBatch("s" * 64, "w" * 64, z(np.int64), z(np.int32), z(np.uint8), z(np.int16),
                               z(np.float32), z(np.float32), z(bool), z(bool), np.zeros((rows, state_dim), np.float32),
                               z(np.int16), MAX_COUNTER)   # the longest first_row on the wire
    return make


def largest_transition_batch_bytes(state_dim: int) -> int:
    """The PULL socket's message limit: MAX_BATCH_ROWS rows of float32 states (the larger wire
    dtype) with long stream and worker ids, plus the margin."""
    return _max_encoded_size_at(_zero_batch(state_dim), MAX_BATCH_ROWS)


def largest_priority_update_bytes() -> int:
    """The ROUTER socket's message limit: a PriorityUpdate of MAX_PRIORITY_ROWS rows (sample
    requests are tiny), plus the margin."""
    def make(rows: int) -> PriorityUpdate:
        return PriorityUpdate(-2**63, np.zeros(rows, np.uint64), np.zeros(rows, np.float32))
    return _max_encoded_size_at(make, MAX_PRIORITY_ROWS)


def largest_sample_reply_bytes(state_dim: int) -> int:
    """A sample reply of MAX_SAMPLE_ROWS rows of float32 states (the client's limit), plus the margin."""
    def make(rows: int) -> SampleReply:
        z = lambda dt: np.zeros(rows, dt)  # noqa: E731
        s = np.zeros((rows, state_dim), np.float32)
        return SampleReply(-2**63, None, z(np.uint64), s, z(np.int16), z(np.float32), z(np.float32), s,
                           z(np.float32), z(np.uint8), z(np.int16))
    return _max_encoded_size_at(make, MAX_SAMPLE_ROWS)


class RepliesInFlight:
    """Sample replies ZeroMQ has not finished sending, by the buffer each was built in.  A peer
    that sends sample requests and never reads the replies makes ZeroMQ keep them (up to
    ROUTER_SNDHWM per peer, ~13 MB each); `bytes` is what they hold, so the service can refuse
    new samples ("busy") while it is over budget.  The buffers of finished replies are reused
    to build the next ones (fresh multi-MB buffers cost page faults)."""

    def __init__(self, spares: int = 2):   # spares >= 1
        self._sending: list[tuple[np.ndarray, zmq.MessageTracker]] = []
        self._spares: list[np.ndarray] = []
        self._max_spares = spares
        self.bytes = 0

    def add(self, buffer: np.ndarray, tracker: zmq.MessageTracker) -> None:
        self._sending.append((buffer, tracker))
        self.bytes += buffer.nbytes

    def prune(self) -> int:
        """Forget the replies ZeroMQ is done with (sent, or dropped with their peer); returns
        the bytes still held."""
        still = []
        for buffer, tracker in self._sending:
            if tracker.done:
                self._spares.append(buffer)
                del self._spares[:-self._max_spares]     # keep the newest few
            else:
                still.append((buffer, tracker))
        self._sending = still
        self.bytes = sum(b.nbytes for b, _ in still)
        return self.bytes

    def spare(self) -> np.ndarray | None:
        """A finished reply's buffer to build the next reply in (None: InPlace allocates)."""
        self.prune()
        return self._spares.pop() if self._spares else None

    def __len__(self) -> int:
        return len(self._sending)

