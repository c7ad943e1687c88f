"""The figures of an evaluation, from its lives (pure: numbers in, numbers out).

A life is a dict with its `points`, `ticks` (decision ticks played), `capped` (the tick cap ended
it: no death) and `start_level` / `level` (1-based, at its start and where it ended).

- points per life: the mean and a Student t 95% interval;
- points per 1,000 ticks (scoring rate): total points over total ticks, with a 95% interval from
  the spread of the lives around that ratio (the ratio estimator's delta method, lives as units);
- deaths per 10,000 ticks (survival): deaths (lives not capped) over total ticks played, with the
  exact (Garwood) Poisson 95% interval on that count;
- levels cleared per 1,000 ticks; capped lives;
- paired differences: life i of two policies starts from the same point, so the mean of the
  per-life differences has an interval far tighter than two independent intervals.
"""
from __future__ import annotations

import math

import numpy as np

Z975 = 1.959963984540054


def t975(df: int) -> float:
    """Student t quantile for a two-sided 95% interval (Cornish-Fisher to 1/df^4: within 0.01% of
    the table from df = 5, 0.2% at df = 3, 1% at df = 2; far off at df = 1, so lives >= 3)."""
    z = Z975
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
            + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * df**4))


def mean_ci(values) -> tuple[float, float]:
    """(mean, half-width of its 95% interval); half-width 0 for a single value."""
    a = np.asarray(values, np.float64)
    if len(a) < 2:
        return float(a.mean()), 0.0
    return float(a.mean()), t975(len(a) - 1) * float(a.std(ddof=1)) / math.sqrt(len(a))


def ratio_ci(numerators, denominators, per: float = 1.0) -> tuple[float, float]:
    """(sum(num) / sum(den) * per, half-width of its 95% interval), lives as sampling units."""
    y, x = np.asarray(numerators, np.float64), np.asarray(denominators, np.float64)
    n, total = len(x), float(x.sum())
    if total <= 0:
        return float("nan"), float("nan")
    r = float(y.sum()) / total
    if n < 2:
        return r * per, 0.0
    residual = y - r * x
    se = math.sqrt(float((residual**2).sum()) / (n * (n - 1))) / (total / n)
    return r * per, t975(n - 1) * se * per


def _poisson_cdf(k: int, mu: float) -> float:
    """P(X <= k) for X ~ Poisson(mu)."""
    if mu <= 0:
        return 1.0
    log_mu = math.log(mu)
    return min(1.0, sum(math.exp(i * log_mu - mu - math.lgamma(i + 1)) for i in range(k + 1)))


def _solve_decreasing(f, target: float, hi: float) -> float:
    """x in [0, hi] with f(x) = target, for f decreasing in x (bisection to float precision)."""
    lo = 0.0
    while f(hi) > target:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if f(mid) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2


def poisson_interval(k: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact (Garwood) two-sided interval for the mean of a Poisson count k:
    lower: P(X >= k | lower) = alpha/2 (0 when k = 0); upper: P(X <= k | upper) = alpha/2."""
    if k < 0:
        raise ValueError(f"a count cannot be negative: {k}")
    upper = _solve_decreasing(lambda mu: _poisson_cdf(k, mu), alpha / 2, k + 10.0)
    lower = 0.0 if k == 0 else _solve_decreasing(lambda mu: _poisson_cdf(k - 1, mu), 1 - alpha / 2, float(k))
    return lower, upper


def death_rate(deaths: int, ticks: int, per: float = 10_000) -> tuple[float, float, float]:
    """(deaths per `per` ticks, and its exact Poisson 95% interval's ends) over `ticks` played."""
    if ticks <= 0:
        return float("nan"), float("nan"), float("nan")
    lo, hi = poisson_interval(deaths)
    return deaths * per / ticks, lo * per / ticks, hi * per / ticks


def paired_difference(a, b) -> tuple[float, float]:
    """(mean of a_i - b_i, half-width of its 95% interval): a and b are the same starts' lives."""
    if len(a) != len(b):
        raise ValueError(f"paired lives need equal counts, not {len(a)} and {len(b)}")
    return mean_ci(np.asarray(a, np.float64) - np.asarray(b, np.float64))


def summarize_lives(lives: list[dict]) -> dict:
    """Every figure of one policy's lives on one suite (rounded for a report)."""
    points = [life["points"] for life in lives]
    ticks = [life["ticks"] for life in lives]
    deaths = sum(not life["capped"] for life in lives)
    mean, ci = mean_ci(points)
    rate, rate_ci = ratio_ci(points, ticks, 1000)
    levels, _ = ratio_ci([life["level"] - life["start_level"] for life in lives], ticks, 1000)
    per10k, lo, hi = death_rate(deaths, sum(ticks))
    return {"lives": len(lives), "mean": round(mean, 1), "ci95": round(ci, 1),
            "points_per_1k_ticks": round(rate, 1), "points_per_1k_ticks_ci95": round(rate_ci, 1),
            "deaths": deaths, "ticks": int(sum(ticks)), "deaths_per_10k_ticks": round(per10k, 2),
            "deaths_per_10k_ticks_ci95": [round(lo, 2), round(hi, 2)],
            "levels_per_1k_ticks": round(levels, 3), "mean_level": round(float(np.mean([x["level"] for x in lives])), 2),
            "capped": sum(bool(life["capped"]) for life in lives)}
