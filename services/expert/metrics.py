"""Prometheus metrics of the expert service."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from tempest_common.wire import REASONS

# Why a request was answered with an error (tempest_expert_errors_total{reason}): the wire's
# reasons (malformed or wrong-version messages), then the service's own.
#   too_many_states: a well-formed request over EXPERT_MAX_STATES states
#   bad_frames:      a message that is not [identity, (empty,) payload] on the ROUTER
#   policy_error:    the rules raised on the request's states (a bug: never seen on any byte value)
#   internal_error:  anything else that went wrong serving a turn (the service carries on)
EXPERT_REASONS = (*REASONS, "too_many_states", "bad_frames", "policy_error", "internal_error")


class ExpertMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        r = {"registry": registry} if registry is not None else {}
        self.requests = Counter("tempest_expert_requests", "Expert requests answered (ok or error)", **r)
        self.decisions = Counter("tempest_expert_decisions", "States the expert decided", **r)
        self.errors = Counter("tempest_expert_errors", "Requests answered with an error (or dropped), by reason",
                              ["reason"], **r)
        self.connections_dropped = Counter(
            "tempest_expert_connections_dropped", "Connections ZeroMQ cut on the ROUTER (a message over the size "
            "limit, or a client that went away)", **r)
        self.latency = Histogram("tempest_expert_latency_seconds",
                                 "Time from receiving a request to sending its reply",
                                 buckets=(5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 5e-2), **r)
        self.batch_states = Histogram("tempest_expert_batch_states", "States per policy call (across requests)",
                                      buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096), **r)
        for reason in EXPERT_REASONS:
            self.errors.labels(reason=reason)
