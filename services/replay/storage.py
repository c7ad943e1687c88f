"""The durable copy of the replay ring in Redis, written by a background thread.

Layout (prefix `REPLAY_REDIS_PREFIX`, default "tempest:replay"):
  {p}:chunk:{seq}    string: one TransitionBatch exactly as it arrived on the wire (msgpack,
                     states as sent: float16 by default, in the schema it was sent in: a
                     schema-1 chunk decodes with derived expert labels); `seq` = global sequence
                     number of its first row, so slot = seq % capacity survives restarts
  {p}:chunks         list of "{seq}:{rows}", oldest first (the ring's order)
  {p}:rows           int: rows held in chunks (bounded by the capacity: oldest chunks go first)
  {p}:next_seq       int: the next row's sequence number
  {p}:inserted_total, {p}:sampled_total   ints: counters behind the replay ratio
  {p}:priorities     msgpack {version, alpha, max_priority, seq: int64 LE bytes, leaf: float32 LE
                     bytes}: the latest priority snapshot (every PRIORITY_SNAPSHOT_S and at stop)
Chunks are written in arrival order; a chunk and its list entry go in one MULTI/EXEC, so a
crash never leaves a listed chunk without its data.  While Redis is unreachable the writer
retries with back-off and the queue holds up to `max_buffered` chunks; a chunk beyond that is
lost and counted (never silently).
"""
from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from typing import Callable, Iterator

import msgpack
import numpy as np
import redis

log = logging.getLogger("replay.storage")


class ChunkStore:
    def __init__(self, url: str, prefix: str, capacity: int, max_buffered: int,
                 on_written: Callable[[int], None] = lambda rows: None,
                 on_lost: Callable[[int], None] = lambda rows: None):
        self.redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.p = prefix
        self.capacity = capacity
        self._queue: queue.Queue = queue.Queue(maxsize=max_buffered)
        self._chunks: deque[tuple[int, int]] = deque()
        self._rows = 0
        self.on_written = on_written
        self.on_lost = on_lost
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending_counters = {"sampled_total": 0}
        self._pending_priorities: dict | None = None   # the newest snapshot, packed by the writer
        self._lock = threading.Lock()
        self.on_priorities_saved: Callable[[], None] = lambda: None

    # -- start-up ---------------------------------------------------------------------------
    def load(self) -> tuple[list[tuple[int, int]], int, dict[str, int]]:
        """Chunk list, next seq and counters as Redis holds them (waits for Redis to answer)."""
        for attempt in range(60):
            try:
                self.redis.ping()
                break
            except redis.ConnectionError as exc:
                if attempt == 59:
                    raise
                log.warning("waiting for Redis: %s", exc)
                time.sleep(1)
        entries = [e.decode().split(":") for e in self.redis.lrange(f"{self.p}:chunks", 0, -1)]
        chunks = [(int(s), int(r)) for s, r in entries]
        self._chunks = deque(chunks)
        self._rows = sum(r for _, r in chunks)
        next_seq = int(self.redis.get(f"{self.p}:next_seq") or 0)
        counters = {k: int(self.redis.get(f"{self.p}:{k}") or 0) for k in ("inserted_total", "sampled_total")}
        return chunks, next_seq, counters

    def load_priorities(self) -> tuple[np.ndarray, np.ndarray, float, float] | None:
        """(seq, leaf, alpha, max_priority) of the stored snapshot, None if there is none;
        ValueError if it cannot be read."""
        blob = self.redis.get(f"{self.p}:priorities")
        if blob is None:
            return None
        try:
            snap = msgpack.unpackb(blob)
            seq, leaf = np.frombuffer(snap["seq"], "<i8"), np.frombuffer(snap["leaf"], "<f4")
            if snap["version"] != 1 or len(seq) != len(leaf):
                raise ValueError(f"version {snap['version']}, {len(seq)} seqs for {len(leaf)} priorities")
            return seq, leaf, float(snap["alpha"]), float(snap["max_priority"])
        except (KeyError, TypeError, msgpack.UnpackException) as exc:
            raise ValueError(f"{type(exc).__name__}: {exc}") from exc

    def iter_payloads(self, chunks: list[tuple[int, int]], group: int = 256) -> Iterator[tuple[int, bytes]]:
        for i in range(0, len(chunks), group):
            part = chunks[i:i + group]
            values = self.redis.mget([f"{self.p}:chunk:{s}" for s, _ in part])
            for (seq, _), value in zip(part, values):
                if value is not None:
                    yield seq, value

    # -- writing ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="redis-writer", daemon=True)
        self._thread.start()

    def put(self, seq: int, rows: int, payload: bytes) -> None:
        try:
            self._queue.put_nowait((seq, rows, payload))
        except queue.Full:
            log.error("Redis write buffer full: chunk of %d rows lost", rows)
            self.on_lost(rows)

    def save_priorities(self, seq: np.ndarray, leaf: np.ndarray, alpha: float, max_priority: float) -> None:
        """Queue a priority snapshot (arrays the caller no longer changes); the writer packs and
        stores the newest one within about a second, off the service's loop."""
        with self._lock:
            self._pending_priorities = {"version": 1, "alpha": alpha, "max_priority": max_priority,
                                        "seq": seq, "leaf": leaf}

    def add_sampled(self, n: int) -> None:
        with self._lock:
            self._pending_counters["sampled_total"] += n

    @property
    def buffered(self) -> int:
        return self._queue.qsize()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued (up to `timeout`), then stop the thread."""
        deadline = time.monotonic() + timeout
        while self._queue.qsize() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        if self._thread is None or not self._thread.is_alive():
            self._flush_counters()  # the writer has stopped: what it left is written from here
        else:
            log.error("the Redis writer did not stop in time; the last counters and priority "
                      "snapshot may not be saved")

    def _run(self) -> None:
        backoff = 0.1
        item = None
        next_flush = time.monotonic() + 1.0
        while not self._stop.is_set():
            if time.monotonic() >= next_flush:  # also under a steady stream of chunks
                self._flush_counters()
                next_flush = time.monotonic() + 1.0
            if item is None:
                try:
                    item = self._queue.get(timeout=0.2)
                except queue.Empty:
                    self._flush_counters()
                    next_flush = time.monotonic() + 1.0
                    continue
            batch = [item]
            while len(batch) < 64:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._write(batch)
                backoff = 0.1
                item = None
            except redis.RedisError as exc:
                log.warning("Redis write failed (%s); retrying in %.1f s, %d chunks buffered",
                            exc, backoff, self._queue.qsize() + len(batch))
                for extra in batch[1:]:  # keep order: retry the whole group, first item first
                    try:
                        self._queue.put_nowait(extra)
                    except queue.Full:
                        self.on_lost(extra[1])
                item = batch[0]
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _write(self, batch: list[tuple[int, int, bytes]]) -> None:
        # A few commands per group, not per chunk (MSET, one RPUSH, one DEL): this thread shares
        # the GIL with the main loop, so its Python work per chunk is what it costs the inserts.
        rows_added = sum(rows for _, rows, _ in batch)
        total = self._rows + rows_added
        listed = len(self._chunks) + len(batch)
        evict = []                  # oldest chunks first, while over capacity (always keep one)
        for seq, rows in itertools.chain(self._chunks, ((seq, rows) for seq, rows, _ in batch)):
            if total <= self.capacity or listed - len(evict) <= 1:
                break
            evict.append(seq)
            total -= rows
        pipe = self.redis.pipeline(transaction=True)
        pipe.mset({f"{self.p}:chunk:{seq}": payload for seq, _, payload in batch})
        pipe.rpush(f"{self.p}:chunks", *(f"{seq}:{rows}" for seq, rows, _ in batch))
        if evict:
            pipe.delete(*(f"{self.p}:chunk:{seq}" for seq in evict))
            pipe.ltrim(f"{self.p}:chunks", len(evict), -1)
        last_seq, last_rows = batch[-1][0], batch[-1][1]
        pipe.set(f"{self.p}:rows", total)
        pipe.set(f"{self.p}:next_seq", last_seq + last_rows)
        pipe.incrby(f"{self.p}:inserted_total", rows_added)
        pipe.execute()
        # Only now, with the group in Redis, does the local picture change (a failed write is
        # retried as a whole).
        self._chunks.extend((seq, rows) for seq, rows, _ in batch)
        for _ in evict:
            self._chunks.popleft()
        self._rows = total
        self.on_written(rows_added)

    def _flush_counters(self) -> None:
        """The sampled counter and the newest priority snapshot (kept for a retry on failure)."""
        with self._lock:
            n, self._pending_counters["sampled_total"] = self._pending_counters["sampled_total"], 0
            snap, self._pending_priorities = self._pending_priorities, None
        if n:
            try:
                self.redis.incrby(f"{self.p}:sampled_total", n)
            except redis.RedisError:
                with self._lock:
                    self._pending_counters["sampled_total"] += n
        if snap is not None:
            try:
                self.redis.set(f"{self.p}:priorities", msgpack.packb(
                    {**snap, "seq": snap["seq"].astype("<i8").tobytes(), "leaf": snap["leaf"].astype("<f4").tobytes()}))
                self.on_priorities_saved()
            except redis.RedisError as exc:
                log.warning("priority snapshot not written (%s)", exc)
                with self._lock:
                    if self._pending_priorities is None:
                        self._pending_priorities = snap
