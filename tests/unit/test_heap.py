"""tempest_common/heap.py: HeapTrimmer's period, and malloc_trim giving freed arena memory back."""
from __future__ import annotations

import ctypes
import threading

import pytest

from tempest_common.heap import HeapTrimmer


def test_it_trims_at_most_once_per_period():
    now = [100.0]
    t = HeapTrimmer(every_s=5.0, clock=lambda: now[0])
    assert not t.maybe_trim()
    now[0] = 104.9
    assert not t.maybe_trim()
    now[0] = 105.0
    assert t.maybe_trim() is t.available
    assert not t.maybe_trim()
    now[0] = 110.0
    assert t.maybe_trim() is t.available
    assert t.trims == (2 if t.available else 0)


@pytest.mark.parametrize("every_s", [0.0, -1.0, float("nan")])
def test_a_period_that_is_not_positive_is_refused(every_s):
    with pytest.raises(ValueError, match="every_s"):
        HeapTrimmer(every_s=every_s)


def resident_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_memory_freed_in_another_threads_arena_goes_back_to_the_os():
    """As ZeroMQ's I/O thread does: a thread allocates (in its own arena) and frees 64 blocks of
    512 KiB (below glibc's mmap threshold once raised, so they stay in the arena); the freed pages
    stay resident until malloc_trim."""
    now = [0.0]
    t = HeapTrimmer(every_s=1.0, clock=lambda: now[0])
    if not t.available:
        pytest.skip("no glibc malloc_trim here")
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    M_MMAP_THRESHOLD = -3
    libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)   # blocks come from the arena, as after glibc raised it

    def churn():
        blocks = [libc.malloc(512 << 10) for _ in range(64)]
        for b in blocks:
            ctypes.memset(b, 1, 512 << 10)
        for b in blocks[:-1]:   # the last stays: the arena's top is not free, so no automatic trim
            libc.free(b)
        churn.kept = blocks[-1]
    worker = threading.Thread(target=churn)
    worker.start()
    worker.join()
    before = resident_kib()
    now[0] = 1.0
    assert t.maybe_trim()
    after = resident_kib()
    libc.free(churn.kept)
    assert before - after > 16 << 10, f"resident {before} KiB before the trim, {after} KiB after"
