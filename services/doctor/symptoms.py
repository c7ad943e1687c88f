"""The symptoms of a divergence, as numbers at steps and frames (the seed's "Critical Symptoms").
Pure: from the snapshot's series and Q's bound."""
from __future__ import annotations

import math

from .arithmetic import fmt, fmt_frames, latest, window_max, window_min

Series = list[tuple[float, float]]
ROWS = 6   # the seed showed six moments of the Q range


def _at(series: Series | None, t: float) -> float | None:
    """The value of `series` at time t (its latest sample at or before t)."""
    best = None
    for ts, v in series or []:
        if ts > t:
            break
        best = v
    return best


def where(series: dict[str, Series], t: float) -> str:
    """'Step 1,234 (frame 17.7M)' at time t; the step alone when no worker counts frames."""
    step, frames = _at(series.get("step"), t), _at(series.get("global_frames"), t)
    said = f"Step {step:,.0f}" if step is not None and not math.isnan(step) else f"t={t:.0f}"
    if frames:
        said += f" (frame {fmt_frames(frames)})"
    return said


def picked(n: int, first_out: int | None) -> list[int]:
    """Up to ROWS indices of n samples, evenly spread, with the first one out of bound and the last."""
    if n <= ROWS:
        return list(range(n))
    chosen = {round(i * (n - 1) / (ROWS - 1)) for i in range(ROWS)}
    if first_out is not None:
        chosen.add(first_out)
        if len(chosen) > ROWS:   # drop the spread index nearest to it
            others = sorted(chosen - {first_out, n - 1, 0}, key=lambda i: abs(i - first_out))
            chosen.discard(others[0])
    return sorted(chosen)


def q_symptom(series: dict[str, Series], bound: tuple[float, float] | None):
    from .findings import Symptom, out_of_bound, q_rows, widened
    rows = q_rows(series)
    if not rows:
        return None
    out = [i for i, (_, lo, hi) in enumerate(rows) if bound is None or out_of_bound(lo, hi, bound)]
    first_out = out[0] if out else None
    lines = []
    width = max(len(where(series, rows[i][0])) for i in picked(len(rows), first_out))
    for i in picked(len(rows), first_out):
        t, lo, hi = rows[i]
        label = where(series, t) + ":"
        note = ""
        if bound is not None:
            wlo, whi = widened(bound)
            if not (math.isfinite(lo) and math.isfinite(hi)):
                note = "(not finite)"
            elif hi > whi:
                note = f"({fmt(hi / bound[1])}x the upper bound)" if bound[1] > 0 else "(above the bound)"
            elif lo < wlo:
                note = "(below the lower bound)"
            else:
                note = "(inside)"
        lines.append(f"{label:<{width + 1}} Q-range [{fmt(lo)}, {fmt(hi)}] {note}".rstrip())
    if bound is not None:
        lines.append(f"Bound: [{fmt(bound[0])}, {fmt(bound[1])}] (widened by 10% of its width: "
                     f"[{fmt(widened(bound)[0])}, {fmt(widened(bound)[1])}])")
    first, last = rows[0][2], rows[-1][2]
    peak = max((r[2] for r in rows if math.isfinite(r[2])), default=math.nan)
    grew = ""
    if first > 0 and math.isfinite(last) and last > first:
        grew = f"; Q max grew {fmt(last / first)}x over the window"
    elif last > 0 and peak > 10 * last:   # the seed's "EXPLOSION!" then "sudden collapse"
        grew = f"; Q max peaked at {fmt(peak)}, then collapsed to {fmt(last)} ({fmt(peak / last)}x lower)"
    since = f"first out of its bound at {where(series, rows[first_out][0])}" if first_out is not None else ""
    return Symptom("Q-Value Divergence", lines, f"Q left the range its rewards allow: {since}{grew}.")


def grad_symptom(series: dict[str, Series], max_grad_norm: float | None):
    from .findings import Symptom
    lo = window_min(series.get("grad_norm_min")) or window_min(series.get("grad_norm"))
    hi = window_max(series.get("grad_norm_max")) or window_max(series.get("grad_norm"))
    clip_lo, clip_hi = window_min(series.get("grad_clip_ratio")), window_max(series.get("grad_clip_ratio"))
    if hi is None:
        return None
    lines = [f"GradNorm: {fmt(lo)} to {fmt(hi)}" + (f"  (clip at {fmt(max_grad_norm)})" if max_grad_norm else "")]
    if clip_lo is not None:
        lines.append(f"ClipRatio: {fmt(clip_lo)} to {fmt(clip_hi)}  (1 = no clipping; "
                     f"{fmt(100 * (1 - clip_lo))}% cut at the hardest)")
    swing = hi / lo if lo else math.inf
    return Symptom("Gradient Instability", lines,
                   f"The pre-clip gradient norm swung {fmt(swing)}x over the window." if lo else
                   "The pre-clip gradient norm left zero.")


def loss_symptom(series: dict[str, Series]):
    from .findings import Symptom
    loss = [v for _, v in series.get("loss", []) if not math.isnan(v)]
    if len(loss) < 2:
        return None
    trend = "decreasing" if loss[-1] < loss[0] else "increasing"
    return Symptom("Loss", [f"Loss: {fmt(loss[0])} -> {fmt(loss[-1])}  ({trend})"],
                   "A decreasing loss with Q out of its bound fits the wrong targets; an increasing one "
                   "chases them." if trend == "decreasing" else "The loss grows with the TD errors.")


def target_symptom(series: dict[str, Series]):
    from .findings import Symptom
    distance, age = latest(series.get("target_distance")), latest(series.get("target_age"))
    if distance is None and age is None:
        return None
    lines = []
    if distance is not None:
        lines.append(f"Target distance: {fmt(distance)}  (||online - target|| / ||online||; 0 = a copy)")
    if age is not None:
        lines.append(f"Target age: {fmt(age)} steps since the last hard copy")
    if distance is not None and distance < 0.01:
        said = "The target is a copy of the online network: every TD target bootstraps from the network it trains."
    else:
        said = "How far the bootstrap target stands from the network it trains (a lagging target steadies it)."
    return Symptom("Target Network", lines, said)


def priority_symptom(series: dict[str, Series]):
    from .findings import Symptom
    peak, mean = latest(series.get("max_priority")), latest(series.get("priority_mean"))
    new, share = latest(series.get("new_priority")), latest(series.get("sampled_new_share"))
    if peak is None:
        return None
    lines = [f"Max priority: {fmt(peak)}   mean: {fmt(mean)}   new rows enter at: {fmt(new)}"]
    if share is not None:
        lines.append(f"Sampled never-trained share: {fmt(share)}")
    return Symptom("Replay Priorities", lines, "TD errors of a diverging Q raise the priorities; new rows "
                   "enter at the maximum.")


def changes_symptom(series: dict[str, Series]):
    """Live settings whose exported value changed within the window (the seed's "why now")."""
    from .findings import Symptom
    lines = []
    for name in sorted(k for k in series if k.startswith("setting_")):
        samples = [(t, v) for t, v in series[name] if not math.isnan(v)]
        for (_, before), (t, after) in zip(samples, samples[1:]):
            if after != before:
                lines.append(f"{where(series, t)}: {name.removeprefix('setting_')} {fmt(before)} -> {fmt(after)}")
    if not lines:
        return None
    return Symptom("Setting Changes in the Window", lines,
                   "What changed before Q left its bound (`python -m services.learner.ctl set`, or a resumed "
                   "run's environment); the learner logs each in setting-changes.jsonl.")


def symptoms(series: dict[str, Series], bound: tuple[float, float] | None) -> list:
    max_grad = latest(series.get("setting_max_grad_norm"))
    found = [q_symptom(series, bound), changes_symptom(series), grad_symptom(series, max_grad),
             loss_symptom(series), target_symptom(series), priority_symptom(series)]
    return [s for s in found if s is not None]
