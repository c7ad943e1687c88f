"""Freed heap memory given back to the operating system (glibc's malloc_trim), every few seconds.

ZeroMQ's I/O thread allocates each received message in its own malloc arena, and the Python thread
that decodes it frees it there.  glibc keeps freed arena pages resident, so after a burst of large
messages (a hostile peer's 16 MB priority updates, the largest transition batches) a service's
resident size stays at the burst's high-water mark although nothing holds that memory any more
(the fuzz flood measured the replay at +110 MiB, 64 MiB of it one arena).  malloc_trim(0) returns
the free pages of every arena (glibc >= 2.8); where there is no glibc it is a no-op.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import time
from typing import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):   # not glibc (musl, macOS): nothing to trim
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


class HeapTrimmer:
    """maybe_trim() from a service's loop: malloc_trim(0) at most once per every_s seconds (a few
    milliseconds each on a few hundred MB of heap)."""

    def __init__(self, every_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        if not every_s > 0:
            raise ValueError(f"every_s must be > 0, not {every_s}")
        self.every_s, self.clock = every_s, clock
        self._trim = _malloc_trim()
        self._next = clock() + every_s
        self.trims = 0

    @property
    def available(self) -> bool:
        return self._trim is not None

    def maybe_trim(self) -> bool:
        """Trim if the period is over; whether it did."""
        now = self.clock()
        if now < self._next:
            return False
        self._next = now + self.every_s
        if self._trim is None:
            return False
        self._trim(0)
        self.trims += 1
        return True
