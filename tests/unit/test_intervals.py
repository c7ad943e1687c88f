"""Step aggregates over the scrape interval (services/learner/intervals.py) and their metrics."""
from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from services.learner.intervals import IntervalStats
from services.learner.metrics import INTERVAL_METRICS, LearnerMetrics


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def stats(window: float = 5.0):
    clock = Clock()
    return IntervalStats(("loss", "grad_norm"), window, clock), clock


def test_nothing_before_the_first_step():
    s, _ = stats()
    assert s.summary() is None


def test_min_max_mean_of_the_steps_in_the_window():
    s, clock = stats()
    for loss, norm in ((0.3, 0.09), (0.1, 0.47), (0.2, 0.2)):
        s.add(loss=loss, grad_norm=norm)
        clock.t += 1
    agg = s.summary()
    assert agg["grad_norm"].min == 0.09 and agg["grad_norm"].max == 0.47
    assert agg["grad_norm"].mean == pytest.approx((0.09 + 0.47 + 0.2) / 3)
    assert agg["loss"].count == 3


def test_steps_older_than_the_window_leave_it_but_the_latest_stays():
    s, clock = stats(window=5.0)
    s.add(loss=9.0, grad_norm=9.0)          # t = 100
    clock.t = 104.0
    s.add(loss=1.0, grad_norm=1.0)          # t = 104
    clock.t = 106.0                         # the first is 6 s old
    agg = s.summary()
    assert (agg["loss"].max, agg["loss"].count) == (1.0, 1)
    clock.t = 500.0                         # no step for minutes: the last one is still shown
    agg = s.summary()
    assert (agg["loss"].mean, agg["loss"].count) == (1.0, 1)


def test_a_nan_step_shows_as_nan_and_inf_as_inf():
    s, _ = stats()
    s.add(loss=0.5, grad_norm=math.inf)
    s.add(loss=math.nan, grad_norm=1.0)
    agg = s.summary()
    assert all(math.isnan(v) for v in agg["loss"][:3])
    assert agg["grad_norm"].max == math.inf and agg["grad_norm"].min == 1.0


def test_the_learner_exports_each_aggregate_under_its_name():
    registry = CollectorRegistry()
    m = LearnerMetrics(registry, interval_s=60)
    assert b"tempest_learner_grad_norm" not in generate_latest(registry), "no series before the first step"
    for norm, ratio in ((0.5, 1.0), (8.0, 0.625), (2.0, 1.0)):
        m.intervals.add(q_min=-1.0, q_max=norm, q_mean=0.5, loss=norm / 10, grad_norm=norm, clip_ratio=ratio,
                        target_clamped_share=0.0)
    get = lambda name: registry.get_sample_value(name)  # noqa: E731
    assert get("tempest_learner_grad_norm") == pytest.approx(3.5)
    assert (get("tempest_learner_grad_norm_min"), get("tempest_learner_grad_norm_max")) == (0.5, 8.0)
    assert get("tempest_learner_grad_clip_ratio_min") == 0.625
    assert get("tempest_learner_q_max") == 8.0 and get("tempest_learner_q_min") == -1.0
    assert get("tempest_learner_interval_steps") == 3
    assert {name for name, *_ in INTERVAL_METRICS} <= {m.name for m in registry.collect()}
