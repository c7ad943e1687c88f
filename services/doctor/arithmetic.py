"""Small pure helpers of the diagnosis: series reductions, the target's blend, score factors,
number formatting for the report (fixed, so a golden file stays byte-exact)."""
from __future__ import annotations

import math

Series = list[tuple[float, float]]


def latest(series: Series | None) -> float | None:
    return series[-1][1] if series else None


def _finite(series: Series | None) -> list[float]:
    return [v for _, v in series or [] if not math.isnan(v)]


def window_max(series: Series | None) -> float | None:
    values = _finite(series)
    return max(values) if values else None


def window_min(series: Series | None) -> float | None:
    values = _finite(series)
    return min(values) if values else None


def rate_per_s(series: Series | None) -> float | None:
    """How fast a count (the run's step) grew over the window, per second; None with < 2 samples
    or no time between them.  A count that went down (a restart) is read from its last fall on."""
    if not series or len(series) < 2:
        return None
    start = 0
    for i in range(1, len(series)):
        if series[i][1] < series[i - 1][1]:
            start = i
    (t0, v0), (t1, v1) = series[start], series[-1]
    return (v1 - v0) / (t1 - t0) if t1 > t0 else None


def growth(series: Series | None) -> float | None:
    """latest / first finite value of the window (how many times it grew); None without two."""
    values = _finite(series)
    if len(values) < 2 or values[0] == 0:
        return None
    return values[-1] / values[0]


def clamp01(x: float) -> float:
    return 0.0 if math.isnan(x) else min(1.0, max(0.0, x))


def log_factor(ratio: float, start: float, span: float) -> float:
    """0 at ratio <= start, 1 at ratio >= start x span, log-linear between."""
    if ratio is None or math.isnan(ratio) or ratio <= start:
        return 0.0
    if math.isinf(ratio):
        return 1.0
    return clamp01(math.log(ratio / start) / math.log(span))


def half_life_steps(tau: float, hard_every: int) -> float:
    """Optimizer steps for the target to take half of the online network: soft updates blend tau
    per step, (1 - tau)^h = 1/2; a hard copy every H steps takes all of it at once, so the sooner
    of the two (inf: the target never moves)."""
    soft = math.inf
    if tau >= 1.0:
        soft = 1.0
    elif tau > 0.0:
        soft = math.log(0.5) / math.log(1.0 - tau)
    return min(soft, float(hard_every)) if hard_every > 0 else soft


def blend_after(tau: float, hard_every: int, steps: int) -> float:
    """Share of the online network in the target `steps` steps after a given moment: 1 - (1 - tau)^N,
    or 1 when a hard copy every H <= N steps fell within them."""
    if hard_every and hard_every <= steps:
        return 1.0
    return 1.0 - (1.0 - tau) ** steps


def round_sig(x: float, digits: int = 2) -> float:
    if x == 0 or not math.isfinite(x):
        return x
    return float(f"{x:.{digits}g}")


def fmt(x: float | None) -> str:
    """A number as the report shows it: 4 significant digits, thousands separated, exponents for
    the very small and very large; '-' for unknown."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return f"{x:,}"
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 1e7 or a < 1e-4:
        return f"{x:.3e}"
    if a >= 1000:
        return f"{x:,.0f}"
    return f"{x:.4g}"


def fmt_frames(frames: float | None) -> str:
    """Global frames the seed's way: 17.7M, 250k."""
    if frames is None or math.isnan(frames):
        return "-"
    if frames >= 1e6:
        return f"{frames / 1e6:.1f}M"
    if frames >= 1e3:
        return f"{frames / 1e3:.0f}k"
    return f"{frames:.0f}"
