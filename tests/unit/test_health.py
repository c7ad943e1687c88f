"""The health verdict of a checkpoint (services/learner/health.py), on hand-made step statistics."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from services.learner.health import (GRAD_NORM_CLIP_MULTIPLE, LOSS_LIMIT, Q_BOUND_SLACK, UNKNOWN, SinceCheckpoint,
                                     Verdict, judge)

NAN, INF = math.nan, math.inf
CLIP = 5.0          # MAX_GRAD_NORM in force
BOUND = (-2.0, 8.0)  # Q bound of the returns (width 10: the slack is 1 on each side)


@dataclass
class Step:
    """What dqn.StepStats gives the accumulator."""
    q_min: float = -1.0
    q_max: float = 3.0
    grad_norm: float = 2.0
    loss: float = 0.1
    applied: bool = True


def skipped() -> Step:
    return Step(q_min=NAN, q_max=NAN, grad_norm=INF, loss=NAN, applied=False)


# name: (steps since the previous checkpoint, MAX_GRAD_NORM, Q bound, previous verdict,
#        healthy?, words each reason must contain, in order)
CASES = {
    "steady_training": ([Step(), Step(q_max=4.0)], CLIP, BOUND, None, True, []),
    "one_nonfinite_batch": ([Step(), skipped(), Step()], CLIP, BOUND, None, False, ["1 non-finite batch"]),
    "only_nonfinite_batches": ([skipped(), skipped()], CLIP, None, Verdict(True), False, ["2 non-finite"]),
    "q_above_the_bound": ([Step(q_max=8.0 + 1.5)], CLIP, BOUND, None, False, ["Q max 9.5 above the bound 8"]),
    "q_below_the_bound": ([Step(q_min=-3.5)], CLIP, BOUND, None, False, ["Q min -3.5 below the bound -2"]),
    "q_both_sides_out": ([Step(q_min=-50.0), Step(q_max=2000.0)], CLIP, BOUND, None, False,
                         ["Q min -50", "Q max 2000"]),
    "q_within_the_slack": ([Step(q_min=-2.0 - 0.9, q_max=8.0 + 0.9)], CLIP, BOUND, None, True, []),
    "q_above_a_bound_unbounded_below": ([Step(q_min=-1e9, q_max=11.5)], CLIP, (-INF, 10.0), None, False,
                                        ["Q max 11.5 above the bound 10"]),
    "q_large_without_a_bound": ([Step(q_max=2000.0)], CLIP, None, None, True, []),
    "q_infinite_without_a_bound": ([Step(q_max=INF)], CLIP, None, None, False, ["Q not finite"]),
    "q_nan_then_fine": ([Step(q_min=NAN), Step()], CLIP, BOUND, None, False, ["Q not finite"]),
    "loss_above_the_limit": ([Step(loss=LOSS_LIMIT * 2)], CLIP, None, None, False, ["loss 2e+06 above 1e+06"]),
    "loss_infinite": ([Step(loss=INF)], CLIP, None, None, False, ["loss not finite"]),
    "grad_norm_clipped_hard_but_in_range": ([Step(grad_norm=CLIP * 50)], CLIP, None, None, True, []),
    "grad_norm_far_past_the_clip": ([Step(grad_norm=CLIP * GRAD_NORM_CLIP_MULTIPLE * 1.01)], CLIP, None, None,
                                    False, ["grad norm 505 above 100 x MAX_GRAD_NORM (500)"]),
    "grad_norm_large_with_clipping_off": ([Step(grad_norm=1e5)], 0.0, None, None, True, []),
    "grad_norm_nan_with_clipping_off": ([Step(grad_norm=NAN)], 0.0, None, None, False, ["grad norm not finite"]),
    "untrained_new_network": ([], CLIP, BOUND, None, True, []),
    "untrained_keeps_a_bad_verdict": ([], CLIP, BOUND, Verdict(False, ["Q max 99 above the bound 8"]), False,
                                      ["Q max 99"]),
    "untrained_after_unknown_health": ([], CLIP, BOUND, Verdict(False, [UNKNOWN]), False, ["health unknown"]),
    "trained_after_a_bad_verdict_judged_afresh": ([Step()], CLIP, BOUND, Verdict(False, ["x"]), True, []),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_verdict(name):
    steps, clip, bound, previous, healthy, words = CASES[name]
    since = SinceCheckpoint()
    for step in steps:
        since.add(step)
    verdict = judge(since, clip, bound, previous)
    assert verdict.healthy is healthy, verdict.reasons
    assert len(verdict.reasons) == len(words), verdict.reasons
    for reason, word in zip(verdict.reasons, words):
        assert word in reason


def test_the_slack_is_a_share_of_the_bound_width():
    assert Q_BOUND_SLACK == 0.1     # CASES' "within the slack" numbers rely on it


def test_the_accumulator_keeps_extremes_and_resets():
    since = SinceCheckpoint()
    for step in (Step(q_min=-1, q_max=2, grad_norm=3, loss=0.5), Step(q_min=-4, q_max=1, grad_norm=7, loss=0.2),
                 skipped()):
        since.add(step)
    assert (since.steps, since.nonfinite, since.q_min, since.q_max, since.grad_norm_max, since.loss_max) == \
        (2, 1, -4, 2, 7, 0.5)
    since.reset()
    assert since == SinceCheckpoint()


# name: the "health" a checkpoint carries (absent: written before health marks) -> healthy?
CHECKPOINT_HEALTH = {
    "healthy": ({"health": {"healthy": True, "reasons": [], "wall_time": 1.0, "step": 5, "global_frames": 9}}, True),
    "not_healthy": ({"health": {"healthy": False, "reasons": ["loss not finite (nan)"]}}, False),
    "no_health_key": ({"online": {}}, False),
    "health_not_a_map": ({"health": "yes"}, False),
    "healthy_not_a_bool": ({"health": {"healthy": 1}}, False),
}


@pytest.mark.parametrize("name", sorted(CHECKPOINT_HEALTH))
def test_the_verdict_a_checkpoint_carries(name):
    saved, healthy = CHECKPOINT_HEALTH[name]
    verdict = Verdict.of_checkpoint(saved)
    assert verdict.healthy is healthy
    if name in ("no_health_key", "health_not_a_map", "healthy_not_a_bool"):
        assert verdict.reasons == [UNKNOWN]
