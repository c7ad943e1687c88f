"""services/learner/schedules.py against hand-computed values."""
import pytest

from services.learner.schedules import bc_weight, per_beta


@pytest.mark.parametrize("frames, decay, floor, expected", [
    (0, 0, 0.0, 2.0),              # decay off: constant, whatever the frames
    (10**9, 0, 0.5, 2.0),
    (0, 1_000_000, 0.0, 2.0),       # start: full weight
    (250_000, 1_000_000, 0.0, 1.5),  # 2 * (1 - 0.25)
    (900_000, 1_000_000, 0.2, 0.4),  # 2 * max(0.2, 0.1)
    (1_000_000, 1_000_000, 0.0, 0.0),
    (3_000_000, 1_000_000, 0.0, 0.0),  # past the end: the floor, never negative
    (3_000_000, 1_000_000, 0.25, 0.5),
])
def test_bc_weight_linear_decay(frames, decay, floor, expected):
    assert bc_weight(2.0, frames, decay, floor) == pytest.approx(expected)


@pytest.mark.parametrize("frames, anneal, expected", [
    (0, 0, 0.4), (10**9, 0, 0.4),               # anneal off: PER_BETA
    (0, 2_000_000, 0.4),
    (500_000, 2_000_000, 0.55),                  # 0.4 + 0.6 * 0.25
    (2_000_000, 2_000_000, 1.0), (5_000_000, 2_000_000, 1.0),
])
def test_per_beta_linear_anneal(frames, anneal, expected):
    assert per_beta(0.4, 1.0, frames, anneal) == pytest.approx(expected)


def test_per_beta_default_end_is_no_change():
    assert per_beta(0.4, 0.4, 123_456, 1_000_000) == 0.4
