"""Delivery accounting (pure: no I/O): which rows of each stream arrived, which are missing, which
came twice (services/replay/README.md, "Accounting").

A worker numbers the rows it hands to its socket (TransitionBatch.first_row: 0 for the stream's
first row, each batch following the last), so the replay *sees* a gap or a repeat instead of
guessing it from episode steps:

    accounting = StreamAccounting()
    verdict = accounting.observe(stream_id, first_row, rows)   # what this batch is; remembers
    verdict.missing      rows skipped just before it (lost after the worker's hand-off)
    verdict.duplicate    its leading rows the stream already had: not stored again
    tail(batch, k)       the batch without its first k rows (a part-duplicate's new rows)
    WorkerLabels()       worker_id -> a label value from a bounded set (metrics)

Memory is bounded as the mirror's stream links are (MAX_STREAMS, the least recently seen stream
forgotten first): a forgotten stream's next batch is "joined", judged from there on.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from tempest_common.messages import TransitionBatch

from .mirror import MAX_STREAMS

# What a batch is, for its stream (tempest_replay_stream_batches_total{outcome}):
IN_ORDER = "in_order"        # first_row is the row after the stream's last
GAP = "gap"                  # first_row is beyond it: the rows between are missing
DUPLICATE = "duplicate"      # first_row is before it: some or all of its rows came already
NEW = "new"                  # a stream not known, from its row 0
JOINED = "joined"            # a stream not known, from a later row (begun before this replay knew
                             # it, or forgotten): the rows before it are not judged
UNNUMBERED = "unnumbered"    # first_row -1 (schema 1): not accounted
OUTCOMES = (IN_ORDER, GAP, DUPLICATE, NEW, JOINED, UNNUMBERED)
MISSING_REASONS = ("gap", "restart")   # restart: the first gap of a stream restored from Redis
MAX_WORKER_LABELS = 256
OTHER_WORKERS = "other"


@dataclass(frozen=True)
class Verdict:
    outcome: str
    missing: int = 0          # rows between the stream's last row and this batch's first
    duplicate: int = 0        # leading rows of this batch the stream already had
    after_restart: bool = False   # the gap is the first a stream restored from Redis shows:
                                  # rows the last replay process (or Redis) did not keep

    @property
    def missing_reason(self) -> str:
        return "restart" if self.after_restart else "gap"


class StreamAccounting:
    """Per stream, the number of the next row expected.  The dict's order is recency (a stream
    is re-inserted on every batch), so the least recently seen stream is the one forgotten."""

    def __init__(self, max_streams: int = MAX_STREAMS):
        self.max_streams = max_streams
        self._next: dict[str, int] = {}
        self._restored: set[str] = set()   # streams rebuilt from Redis, not yet seen live

    def __len__(self) -> int:
        return len(self._next)

    def observe(self, stream_id: str, first_row: int, rows: int) -> Verdict:
        if first_row < 0:
            return Verdict(UNNUMBERED)
        end = first_row + rows
        expected = self._next.pop(stream_id, None)
        restored = stream_id in self._restored
        self._restored.discard(stream_id)
        if expected is None:
            verdict, expected_next = Verdict(NEW if first_row == 0 else JOINED), end
        elif first_row == expected:
            verdict, expected_next = Verdict(IN_ORDER), end
        elif first_row > expected:
            verdict, expected_next = Verdict(GAP, missing=first_row - expected, after_restart=restored), end
        else:   # a repeat or a step back: never move the stream backwards (its rows would count twice)
            verdict = Verdict(DUPLICATE, duplicate=min(rows, expected - first_row))
            expected_next = max(expected, end)
        self._next[stream_id] = expected_next
        if len(self._next) > self.max_streams:   # made-up stream ids must not grow this without bound
            oldest = next(iter(self._next))
            del self._next[oldest]
            self._restored.discard(oldest)
        return verdict

    def mark_restored(self) -> None:
        """Every stream known now was rebuilt from Redis (ReplayService.restore): the first gap
        each shows live is what the last process, or Redis, did not keep (reason "restart")."""
        self._restored = set(self._next)

    def expected(self, stream_id: str) -> int | None:
        return self._next.get(stream_id)


def tail(batch: TransitionBatch, k: int) -> TransitionBatch:
    """`batch` without its first k rows (first_row moved on by k): the new rows of a batch whose
    head the stream already had."""
    rows = {f.name: getattr(batch, f.name)[k:] for f in fields(batch) if f.metadata["rows"]}
    return replace(batch, first_row=batch.first_row + k, **rows)


def seq_holes(chunks: list[tuple[int, int]]) -> int:
    """Rows missing between listed chunks ((seq, rows), in seq order): the replay numbers every
    stored row (seq) without gaps, so a hole is rows the durable copy lost (Redis restarted from an
    append-only file a second behind, or the writer's buffer overflowed: tempest_replay_lost_total)."""
    holes = 0
    for (seq, rows), (next_seq, _) in zip(chunks, chunks[1:]):
        holes += max(0, next_seq - (seq + rows))
    return holes


class WorkerLabels:
    """worker_id -> label value: the first MAX_WORKER_LABELS ids seen keep their own, later ones
    share OTHER_WORKERS, so a peer making up ids cannot grow the metrics without bound."""

    def __init__(self, limit: int = MAX_WORKER_LABELS):
        self.limit = limit
        self._labels: dict[str, str] = {}

    def __call__(self, worker_id: str) -> str:
        label = self._labels.get(worker_id)
        if label is None:
            if len(self._labels) >= self.limit:
                return OTHER_WORKERS
            label = self._labels[worker_id] = worker_id
        return label
