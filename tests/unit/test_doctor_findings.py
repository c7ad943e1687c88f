"""The stability doctor's diagnosis (services/doctor/findings.py) on hand-made histories: a table
of named cases, each a few minutes of metrics and the live settings, and what must come out."""
from __future__ import annotations

import math

import pytest

from services.doctor.arithmetic import blend_after, half_life_steps, log_factor, rate_per_s
from services.doctor.findings import Snapshot, diagnose
from services.learner.settings import LiveSettings

SANE = {**LiveSettings().__dict__, "training_steps_per_sample": 16.0}   # the learner's defaults
BOUND = (-5.0, 2000.0)   # the defaults' bound: clip 10, death penalty 5, gamma 0.995
STEPS_PER_S = 48.0       # the seed's pace


def history(q_max, q_min=None, samples: int = 12, every_s: float = 5.0, **series) -> dict:
    """Series over `samples` scrapes: each value a constant, a list (one per scrape), or a
    callable of the scrape index.  Q's bound is BOUND; the step advances STEPS_PER_S."""
    def values(v):
        if callable(v):
            return [v(i) for i in range(samples)]
        return list(v) if isinstance(v, (list, tuple)) else [v] * samples
    q_min = q_min if q_min is not None else 0.5
    base = {"q_max": q_max, "q_min": q_min, "q_bound_lower": BOUND[0], "q_bound_upper": BOUND[1],
            "step": lambda i: 100_000 + STEPS_PER_S * every_s * i, "global_frames": lambda i: 17_700_000 + 50_000 * i,
            "lr": None, "grad_clip_ratio": 1.0, "grad_norm": 1.0, "grad_norm_max": 2.0, "target_distance": 0.1,
            "new_priority": 2.0, "priority_mean": 1.0, "sampled_new_share": 0.05, "expert_ratio": 0.5}
    base.update(series)
    return {name: [(i * every_s, float(x)) for i, x in enumerate(values(v))]
            for name, v in base.items() if v is not None}


def exploding(i: int) -> float:
    return 300.0 * 1.4 ** i      # 300 -> 12,000 over a minute: out of [-5, 2000] from the 6th scrape


CASES = {
    # name: (series, settings changes, verdict, the cause ranked first, cure that must be in the cure)
    "healthy, even with a high lr": (history(q_max=150.0), {"lr": 0.01, "tau": 0.05}, "healthy", None, {}),
    "healthy at the bound's slack": (history(q_max=2150.0, q_min=-6.0), {}, "healthy", None, {}),
    "lr too high (the seed's 0.003), sane tau": (
        history(q_max=exploding, grad_clip_ratio=0.569, grad_norm_max=8.787), {"lr": 0.003},
        "divergent", "lr_too_high", {"lr": 0.001}),
    "lr far too high": (history(q_max=exploding), {"lr": 0.1}, "divergent", "lr_too_high", {"lr": 0.001}),
    "tau = 1 with a sane lr": (history(q_max=exploding, target_distance=0.0), {"tau": 1.0},
                               "divergent", "target_too_fast", {"tau": 0.005}),
    "hard copy every step": (history(q_max=exploding, target_distance=0.0),
                             {"use_soft_target": False, "hard_target_refresh_every_steps": 1},
                             "divergent", "target_too_fast", {"hard_target_refresh_every_steps": 25_000}),
    "the seed's settings: lr first, tau and n_step in the cure": (
        history(q_max=exploding, grad_clip_ratio=0.569, grad_norm_max=8.787, target_distance=0.03),
        {"lr": 0.003, "tau": 0.012, "n_step": 8}, "divergent", "lr_too_high",
        {"lr": 0.001, "tau": 0.005, "n_step": 5}),
    "priority ratchet": (history(q_max=exploding, new_priority=5000.0, priority_mean=2.0, sampled_new_share=0.97),
                         {}, "divergent", "priority_ratchet", {}),
    "bootstrap horizon": (history(q_max=exploding), {"gamma": 0.9999, "n_step": 20}, "divergent",
                          "bootstrap_horizon", {"gamma": 0.995, "n_step": 5}),
    "replay ratio": (history(q_max=exploding), {"training_steps_per_sample": 512.0}, "divergent", "replay_ratio",
                     {"training_steps_per_sample": 256.0}),
    "expert share at a low floor": (history(q_max=exploding, expert_ratio=0.05), {"expert_ratio_min": 0.05},
                                    "divergent", "expert_share", {"expert_ratio_min": 0.2}),
    "Q below its bound": (history(q_max=10.0, q_min=lambda i: -10.0 * 2 ** i), {"lr": 0.05}, "divergent",
                          "lr_too_high", {"lr": 0.001}),
    "lr too high under a cosine schedule: its floor comes down too": (
        history(q_max=exploding), {"lr": 0.0003, "lr_schedule": "cosine", "lr_min": 0.0002}, "divergent",
        "lr_too_high", {"lr": 0.0001, "lr_min": 0.0001}),
    "Q not finite": (history(q_max=math.nan), {"tau": 1.0}, "divergent", "target_too_fast", {"tau": 0.005}),
    "no setting stands out: lr is the first cure": (history(q_max=exploding), {}, "divergent", "lr_too_high",
                                                    {"lr": 0.00033}),
    "bound not known": (history(q_max=exploding, q_bound_lower=math.nan, q_bound_upper=math.nan), {"lr": 0.1},
                        "unknown", None, {}),
    "no Q yet": ({}, {}, "unknown", None, {}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_diagnosis(name):
    series, changes, verdict, first, cure = CASES[name]
    d = diagnose(Snapshot(60.0, series, {**SANE, **changes}))
    assert d.verdict == verdict, d.why
    if first is None:
        assert d.findings == [] and d.cure() == {}
        return
    assert d.findings[0].cause == first, [(f.cause, round(f.score, 3)) for f in d.findings]
    assert cure.items() <= d.cure().items(), d.cure()
    scores = [f.score for f in d.findings]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)


def test_the_two_single_causes_rank_each_other_apart():
    """lr high with a sane tau, and tau = 1 with a sane lr: each its own cause first, the other's not found."""
    lr = diagnose(Snapshot(60, history(q_max=exploding), {**SANE, "lr": 1.0}))
    tau = diagnose(Snapshot(60, history(q_max=exploding, target_distance=0.0),
                            {**SANE, "tau": 1.0, "hard_target_refresh_every_steps": 1}))
    assert [f.cause for f in lr.findings][:1] == ["lr_too_high"] and "target_too_fast" not in \
        [f.cause for f in lr.findings]
    assert [f.cause for f in tau.findings][:1] == ["target_too_fast"] and "lr_too_high" not in \
        [f.cause for f in tau.findings]


def test_an_explosion_that_collapsed_is_remembered_from_judge_from():
    """The seed's Q: 2,000, then a sudden collapse to 16.  The latest sample alone looks healthy;
    every sample since judge_from counts."""
    q = [300, 1000, 1300, 1780, 2400, 16]
    series = history(q_max=q, samples=len(q))
    assert diagnose(Snapshot(30, series, {**SANE, "lr": 0.003})).verdict == "healthy"
    d = diagnose(Snapshot(30, series, {**SANE, "lr": 0.003}, judge_from=0.0))
    assert d.verdict == "divergent" and "2,400" in d.why and d.findings[0].cause == "lr_too_high"
    assert diagnose(Snapshot(30, series, SANE, judge_from=25.0)).verdict == "healthy"
    assert diagnose(Snapshot(30, series, SANE, judge_from=30.1)).verdict == "unknown"


def test_without_the_live_settings_the_divergence_is_still_told():
    d = diagnose(Snapshot(60, history(q_max=exploding), {}))
    assert d.verdict == "divergent" and d.findings == [] and "not known" in d.why


def test_arithmetic():
    # the seed: 0.988^100 = 0.299 (it wrote 0.297) of the old target after 100 steps; tau 0.005: 61% old
    assert blend_after(0.012, 0, 100) == pytest.approx(0.701, abs=1e-3)
    assert blend_after(0.005, 0, 100) == pytest.approx(0.394, abs=1e-3)
    assert blend_after(0.005, 50, 100) == 1.0
    assert half_life_steps(0.005, 0) == pytest.approx(138.3, abs=0.1)
    assert half_life_steps(1.0, 0) == 1.0 and half_life_steps(0.0, 0) == math.inf
    assert half_life_steps(0.005, 10) == 10
    assert log_factor(1.0, 1.0, 30) == 0 and log_factor(30.0, 1.0, 30) == pytest.approx(1.0)
    assert log_factor(math.inf, 1.0, 30) == 1.0
    assert rate_per_s([(0, 100), (10, 580)]) == 48.0
    assert rate_per_s([(0, 900), (5, 1000), (10, 40), (20, 520)]) == 48.0   # a restart: from its fall on
    assert rate_per_s([(0, 1)]) is None
