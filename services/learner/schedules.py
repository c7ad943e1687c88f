r"""Schedules over the run's global frame count F (pure; the learner reads F from its bookkeeper).

Behaviour-cloning weight, linear decay to a floor (decay_frames = 0: constant)::
    lambda_BC(F) = lambda_BC * max(f_min, 1 - F / decay_frames)

PER importance exponent, linear anneal (frames = 0: constant beta_0)::
    beta(F) = beta_0 + (beta_end - beta_0) * min(1, F / frames)

Learning rate over optimizer steps t (the one schedule counted in steps), cosine to a floor::
    lr(t) = lr_min + (lr - lr_min) * (1 + cos(pi * min(t, T) / T)) / 2,  T = LR_SCHEDULE_STEPS
"""
from __future__ import annotations

import math


def bc_weight(weight: float, global_frames: int, decay_frames: int, min_fraction: float) -> float:
    if decay_frames <= 0:
        return weight
    return weight * max(min_fraction, 1.0 - global_frames / decay_frames)


def per_beta(beta: float, beta_end: float, global_frames: int, frames: int) -> float:
    if frames <= 0:
        return beta
    return beta + (beta_end - beta) * min(1.0, global_frames / frames)


def learning_rate(schedule: str, lr: float, lr_min: float, steps: int, schedule_steps: int) -> float:
    """schedule "none": lr; "cosine": as above, lr_min from step T on."""
    if schedule == "cosine":
        frac = min(steps, schedule_steps) / schedule_steps
        return lr_min + (lr - lr_min) * 0.5 * (1 + math.cos(math.pi * frac))
    return lr
