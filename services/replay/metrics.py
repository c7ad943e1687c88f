"""Prometheus metrics of the replay service."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tempest_common.wire import REASONS


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
        self.priority_snapshots = Counter("tempest_replay_priority_snapshots",
                                          "Priority snapshots written to Redis", **r)
        self.priorities_restored = Gauge("tempest_replay_priorities_restored",
                                         "Rows whose priority came back from Redis at the last start", **r)
        self.sample_seconds = Histogram("tempest_replay_sample_seconds", "Time to build one sample batch",
                                        buckets=(1e-4, 1e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.25, 1.0), **r)
        for reason in (*REASONS, "nonfinite"):
            self.malformed.labels(reason=reason)
        for reason in ("too_small", "rate_limited", "bad_request", "busy", "too_large"):
            self.refused.labels(reason=reason)
        for reason in ("bad_index", "nonfinite", "nonpositive", "clamped"):
            self.bad_priorities.labels(reason=reason)
        for socket in ("pull", "router"):
            self.connections_dropped.labels(socket=socket)
