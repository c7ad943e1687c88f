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
Chunks are written in arrival order (= seq order) by one Lua script per group, so a crash never
leaves a listed chunk without its data.  The script is idempotent: it skips chunks below the
stored next_seq and evicts by name, so a group retried after a write that landed but whose
reply was lost (a timeout, a dropped connection) is neither listed twice nor trims the list
twice.  A failed group is retried as it is, ahead of newer chunks, so order survives failures.
While Redis is unreachable the writer retries with back-off and the queue holds up to
`max_buffered` chunks; a chunk beyond that is lost and counted (never silently).  `load` sorts
the list by seq and drops duplicate or overlapping entries (rewriting it), so data written
before these rules still restores in order, each row once.
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

# KEYS: chunks list, rows, next_seq, inserted_total.  ARGV: chunk key prefix, rows held after the
# group, group end (its next seq), chunks n, evictions e, then n x (seq, rows, payload), then
# e x (seq, rows).  Chunks below the stored next_seq are already there (an earlier try of this
# group landed): skipped.  Evictions delete by name, a no-op when done already.
_WRITE_GROUP = """
local stored = tonumber(redis.call('GET', KEYS[3]) or '0')
local n, e = tonumber(ARGV[4]), tonumber(ARGV[5])
local added, i = 0, 6
for _ = 1, n do
  if tonumber(ARGV[i]) >= stored then
    redis.call('SET', ARGV[1] .. ARGV[i], ARGV[i + 2])
    redis.call('RPUSH', KEYS[1], ARGV[i] .. ':' .. ARGV[i + 1])
    added = added + tonumber(ARGV[i + 1])
  end
  i = i + 3
end
for _ = 1, e do
  redis.call('DEL', ARGV[1] .. ARGV[i])
  redis.call('LREM', KEYS[1], 1, ARGV[i] .. ':' .. ARGV[i + 1])
  i = i + 2
end
if added > 0 then
  redis.call('SET', KEYS[3], ARGV[3])
  redis.call('INCRBY', KEYS[4], added)
end
redis.call('SET', KEYS[2], ARGV[2])
return added
"""


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
        self._in_hand = 0            # chunks taken from the queue, not yet written (a failed group)
        self._write_group = self.redis.register_script(_WRITE_GROUP)
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
        chunks = self._clean_list()
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

    def _clean_list(self) -> list[tuple[int, int]]:
        """The chunk list in seq order, each row once: entries that are duplicates (a retried
        write before writes were idempotent), overlap an earlier chunk or do not parse are
        dropped, and a list that needed it is rewritten (with the rows count), so it matches
        the writer's picture, which evicts oldest first.  Payloads named only by dropped entries
        are deleted."""
        raw = self.redis.lrange(f"{self.p}:chunks", 0, -1)
        parsed, bad = [], 0
        for e in raw:
            try:
                s, r = e.decode().split(":")
                parsed.append((int(s), int(r)))
            except ValueError:
                bad += 1
        ordered = sorted(parsed, key=lambda c: c[0])    # stable: of equal seqs the first listed stays
        chunks, end = [], None
        for seq, rows in ordered:
            if end is None or seq >= end:
                chunks.append((seq, rows))
                end = seq + rows
        if len(chunks) == len(raw) and chunks == parsed:
            return chunks
        orphans = {s for s, _ in parsed} - {s for s, _ in chunks}
        log.warning("Redis chunk list: %d entries, %d out of order, %d duplicate or overlapping, %d unparsable; "
                    "rewritten in seq order (%d chunks)", len(raw), sum(a != b for a, b in zip(parsed, ordered)),
                    len(parsed) - len(chunks), bad, len(chunks))
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(f"{self.p}:chunks", *(f"{self.p}:chunk:{s}" for s in orphans))
        if chunks:
            pipe.rpush(f"{self.p}:chunks", *(f"{s}:{r}" for s, r in chunks))
        pipe.set(f"{self.p}:rows", sum(r for _, r in chunks))
        pipe.execute()
        return chunks

    def iter_payloads(self, chunks: list[tuple[int, int]], group: int = 256) -> Iterator[tuple[int, bytes | None]]:
        """(seq, payload) in the order given; payload None where a listed chunk has none."""
        for i in range(0, len(chunks), group):
            part = chunks[i:i + group]
            values = self.redis.mget([f"{self.p}:chunk:{s}" for s, _ in part])
            yield from ((seq, value) for (seq, _), value in zip(part, values))

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
        return self._queue.qsize() + self._in_hand

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued (up to `timeout`), then stop the thread."""
        deadline = time.monotonic() + timeout
        while self.buffered and time.monotonic() < deadline:
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
        # The group in hand, oldest first.  A failed group stays here and is retried as it is;
        # newer chunks only join behind it (putting it back in the queue once sent it behind
        # chunks that arrived meanwhile, out of seq order).
        group: list[tuple[int, int, bytes]] = []
        next_flush = time.monotonic() + 1.0
        while not self._stop.is_set():
            if time.monotonic() >= next_flush:  # also under a steady stream of chunks
                self._flush_counters()
                next_flush = time.monotonic() + 1.0
            if not group:
                try:
                    group.append(self._queue.get(timeout=0.2))
                except queue.Empty:
                    self._flush_counters()
                    next_flush = time.monotonic() + 1.0
                    continue
            while len(group) < 64:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._in_hand = len(group)
            try:
                self._write(group)
                backoff = 0.1
                group = []
                self._in_hand = 0
            except redis.RedisError as exc:
                log.warning("Redis write failed (%s); retrying in %.1f s, %d chunks buffered",
                            exc, backoff, self.buffered)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        while True:                 # stopped with Redis unreachable: what was not written is lost, counted
            try:
                group.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if group:
            log.error("stopping with %d chunks not written to Redis: lost", len(group))
            self.on_lost(sum(rows for _, rows, _ in group))
        self._in_hand = 0

    def _write(self, batch: list[tuple[int, int, bytes]]) -> None:
        # One script call per group, not commands per chunk: this thread shares the GIL with the
        # main loop, so its Python work per chunk is what it costs the inserts.
        rows_added = sum(rows for _, rows, _ in batch)
        total = self._rows + rows_added
        listed = len(self._chunks) + len(batch)
        evict = []                  # oldest chunks first, while over capacity (always keep one)
        for seq, rows in itertools.chain(self._chunks, ((seq, rows) for seq, rows, _ in batch)):
            if total <= self.capacity or listed - len(evict) <= 1:
                break
            evict.append((seq, rows))
            total -= rows
        args = [f"{self.p}:chunk:", total, batch[-1][0] + batch[-1][1], len(batch), len(evict)]
        for item in batch:
            args.extend(item)
        for item in evict:
            args.extend(item)
        p = self.p
        self._write_group(keys=[f"{p}:chunks", f"{p}:rows", f"{p}:next_seq", f"{p}:inserted_total"], args=args)
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
