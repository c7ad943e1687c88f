"""The bound on Q that the workers' reward settings imply (issue 16, "Q against its bound").  Pure.

What Q estimates, in which units.  The replay builds each target from one-step records, summing
per decision tick r = reward_game + reward_shaping (services/replay/mirror.py) discounted by gamma
per tick, and bootstraps with gamma^h Q(s'); a life's death edge ends the sum (discount 0).  So Q
is in the rows' reward units, which the workers make (services/emulator/episodes.py, game_reward):

    reward_game    = clip(score_delta x scale, -clip, +clip) - death_penalty   (on the death edge)
    reward_game    = clip(score_delta x scale, -clip, +clip)                   (on every other tick)
    reward_shaping = survival_bonus on every tick but the death edge (0 there)

`clip` applies AFTER `scale`: it is in reward units, not points.  `death_penalty` and
`survival_bonus` are in reward units too, neither scaled nor clipped.  So `scale` does not enter
the bound (the points a tick can earn have no known maximum; the clip is what bounds them).  Within
a life the score never falls, so score_delta >= 0 and the clipped term lies in [0, clip].

Hence, for any policy and every state-action, with the sum over ticks k of gamma^k <= 1/(1 - gamma):
  * upper: no tick earns more than clip + max(0, bonus) (the death edge: clip - death_penalty, less)
        Q <= (clip + max(0, bonus)) / (1 - gamma)
  * lower: every tick alive earns at least min(0, bonus) and at most one death edge (the last
    tick) at least -death_penalty, discounted by gamma^T <= 1
        Q >= min(0, bonus) / (1 - gamma) - death_penalty
This is the formula of issue 16 exactly: it holds for this reward definition, and is tight for a
survival bonus >= 0 (the default 0): a life that dies on its first tick without points earns
-death_penalty, one at the clip every tick for ever (clip + bonus) / (1 - gamma).  With a negative
bonus it holds but is loose (the worst life earns min(-death_penalty, bonus / (1 - gamma)), the
best max(clip - death_penalty, (clip + bonus) / (1 - gamma))); the issue's sums are kept, being
simpler to read off a dashboard and wider, never narrower.  Not covered: the six BCD score digits
rolling over past 999,999 (one tick of -clip, in a game no policy here reaches).
It bounds the true values; an estimate outside it (beyond a little approximation error, and the
BC margin the imitation loss pushes non-expert actions below the expert's) is divergence.

gamma = 1 (allowed: a life always ends, but after no bounded number of ticks) makes a side whose
per-tick term is not 0 infinite: the returns are not bounded a priori there.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class RewardSettings:
    """A worker's reward settings (Heartbeat; the emulator's REWARD_SCALE, REWARD_CLIP,
    DEATH_PENALTY, SURVIVAL_BONUS), all in reward units but scale (reward per point)."""
    scale: float
    clip: float
    death_penalty: float
    survival_bonus: float

    @classmethod
    def of(cls, heartbeat) -> "RewardSettings | None":
        """The settings a Heartbeat carries; None when it does not say (a schema-2 heartbeat)."""
        if not heartbeat.rewards_known:
            return None
        return cls(float(heartbeat.reward_scale), float(heartbeat.reward_clip), float(heartbeat.death_penalty),
                   float(heartbeat.survival_bonus))


def _discounted_sum(per_tick: float, gamma: float) -> float:
    """per_tick x (1 + gamma + gamma^2 + ...): per_tick / (1 - gamma); +-inf at gamma = 1 (0 stays 0)."""
    if per_tick == 0.0:
        return 0.0
    if gamma >= 1.0:
        return math.copysign(math.inf, per_tick)
    return per_tick / (1.0 - gamma)


def q_bound(settings: RewardSettings, gamma: float) -> tuple[float, float]:
    """(lower, upper) of every Q under these reward settings and discount (module docstring)."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
    bonus = settings.survival_bonus
    lower = _discounted_sum(min(0.0, bonus), gamma) - settings.death_penalty
    upper = _discounted_sum(settings.clip + max(0.0, bonus), gamma)
    return lower, upper


def widest(bounds: Iterable[tuple[float, float]]) -> tuple[float, float] | None:
    """The bound that holds for all of `bounds` (workers that disagree: the lowest lower, the
    highest upper); None when there is none."""
    bounds = list(bounds)
    if not bounds:
        return None
    return min(lo for lo, _ in bounds), max(hi for _, hi in bounds)
