"""Prometheus metrics of the replay service."""
from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tempest_common.wire import REASONS

from .accounting import MISSING_REASONS, OUTCOMES

# Why received rows were not stored (tempest_replay_transitions_dropped_total{reason}): rows the
# stream already had, a state size other than STATE_DIM, NaN/inf (or beyond the stored dtype).
DROP_REASONS = ("duplicate", "malformed", "nonfinite")


@dataclass(frozen=True)
class WorkerCounters:
    """One worker label's accounting counters, looked up once (a labels() call per batch and
    counter would be most of the accounting's cost)."""
    received: Counter
    stored: Counter
    dropped: dict
    missing: dict


class ReplayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        r = {"registry": registry} if registry is not None else {}
        self.size = Gauge("tempest_replay_size", "Transitions held (in-memory mirror of the Redis ring)", **r)
        self.ratio = Gauge("tempest_replay_ratio", "Samples served / transitions inserted, since the ring began", **r)
        self.inserted = Counter("tempest_replay_inserted", "Transitions received and stored in the mirror", **r)
        self.written = Counter("tempest_replay_redis_written", "Transitions written to Redis", **r)
        self.lost = Counter("tempest_replay_lost", "Transitions lost: Redis unreachable and the buffer full", **r)
        self.buffered = Gauge("tempest_replay_redis_buffered_chunks", "Chunks waiting to be written to Redis", **r)
        self.samples = Counter("tempest_replay_samples", "Samples served", **r)
        self.stream_breaks = Counter(
            "tempest_replay_stream_breaks", "Stream links refused: a row that does not continue its stream's "
            "previous row (same episode, step + 1), so no n-step window bridges the gap", **r)
        self.malformed = Counter("tempest_replay_malformed", "Malformed or wrong-version messages, by reason",
                                 ["reason"], **r)
        self.refused = Counter("tempest_replay_refused", "Requests refused, by reason", ["reason"], **r)
        self.stale_priorities = Counter("tempest_replay_stale_priorities",
                                        "Priority updates for rows overwritten since sampling (ignored)", **r)
        self.bad_priorities = Counter(
            "tempest_replay_bad_priorities",
            "Priority update rows ignored (bad_index, nonfinite, nonpositive) or set to the cap (clamped), by reason",
            ["reason"], **r)
        self.connections_dropped = Counter(
            "tempest_replay_connections_dropped",
            "Connections ZeroMQ cut, by socket: a message over the size limit, or a peer that left", ["socket"], **r)
        self.reply_bytes_in_flight = Gauge("tempest_replay_reply_bytes_in_flight",
                                           "Bytes of sample replies ZeroMQ has not finished sending", **r)
        self.parked = Gauge("tempest_replay_parked_requests", "Sample requests waiting to be served", **r)
        self.max_priority = Gauge(
            "tempest_replay_max_priority", "Maximum priority seen: new rows enter at it (or at PER_NEW_PRIORITY_CAP's "
            "share)", **r)
        self.priority_mean = Gauge("tempest_replay_priority_mean",
                                   "Mean of every priority update so far (the running mean the new-row cap uses)", **r)
        self.new_priority = Gauge("tempest_replay_new_priority", "Priority a new row enters at", **r)
        self.sampled_new_share = Gauge(
            "tempest_replay_sampled_new_share",
            "Share of the latest sample's rows still at their new-row priority (never trained on): near 1 while "
            "new rows outrank the rest (the priority ratchet)", **r)
        self.priority_resets = Counter(
            "tempest_replay_priority_resets", "Maximum-priority resets asked for (PriorityReset, after a learner "
            "rollback)", **r)
        self.priority_snapshots = Counter("tempest_replay_priority_snapshots",
                                          "Priority snapshots written to Redis", **r)
        self.priorities_restored = Gauge("tempest_replay_priorities_restored",
                                         "Rows whose priority came back from Redis at the last start", **r)
        self.sample_seconds = Histogram("tempest_replay_sample_seconds", "Time to build one sample batch",
                                        buckets=(1e-4, 1e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.25, 1.0), **r)
        # Delivery accounting (README, "Accounting"), in rows, by worker_id (services/replay/
        # accounting.py's WorkerLabels: at most 256 values, then "other")
        self.received = Counter("tempest_replay_transitions_received", "Transition rows received, by worker",
                                ["worker"], **r)
        self.stored = Counter("tempest_replay_transitions_stored", "Transition rows stored (mirror, then Redis), "
                              "by worker", ["worker"], **r)
        self.transitions_dropped = Counter(
            "tempest_replay_transitions_dropped", "Transition rows received and not stored, by worker and reason "
            "(duplicate, malformed, nonfinite)", ["worker", "reason"], **r)
        self.missing = Counter(
            "tempest_replay_transitions_missing", "Transition rows never received, seen as a gap in a stream's row "
            "numbers, by worker and reason (gap; restart: the first gap after a restore from Redis)",
            ["worker", "reason"], **r)
        self.stream_batches = Counter("tempest_replay_stream_batches", "Transition batches by what they are "
                                      "for their stream's row numbers", ["outcome"], **r)
        self.restore_missing = Gauge("tempest_replay_restore_missing_rows", "Rows Redis lacked between its "
                                     "chunks, or could not give back, at the last start", **r)
        self._workers: dict[str, WorkerCounters] = {}
        self.batch_outcomes = {outcome: self.stream_batches.labels(outcome=outcome) for outcome in OUTCOMES}
        for reason in (*REASONS, "nonfinite"):
            self.malformed.labels(reason=reason)
        for reason in ("too_small", "rate_limited", "bad_request", "busy", "too_large"):
            self.refused.labels(reason=reason)
        for reason in ("bad_index", "nonfinite", "nonpositive", "clamped"):
            self.bad_priorities.labels(reason=reason)
        for socket in ("pull", "router"):
            self.connections_dropped.labels(socket=socket)

    def worker(self, label: str) -> WorkerCounters:
        """The accounting counters of one worker label, every reason created at 0 on first use."""
        counters = self._workers.get(label)
        if counters is None:
            counters = self._workers[label] = WorkerCounters(
                self.received.labels(worker=label), self.stored.labels(worker=label),
                {reason: self.transitions_dropped.labels(worker=label, reason=reason) for reason in DROP_REASONS},
                {reason: self.missing.labels(worker=label, reason=reason) for reason in MISSING_REASONS})
        return counters
