"""The diagnosis: from a snapshot of recent metric history and the live settings, is the run
diverging, and why?  Pure: no I/O, no clock (the snapshot says what time it is).

    diagnosis = diagnose(Snapshot(now, series={"q_max": [(t, v), ...], ...}, settings=ctl.get()))
    diagnosis.verdict        # "healthy" | "divergent" | "unknown"
    diagnosis.findings       # ranked causes, best first: cause id, score, evidence, arithmetic, cure
    diagnosis.cure()         # {setting: value}: what the doctor would `ctl set`

Q against its bound decides whether there is a divergence at all (issue 16, qbound.py): an
interval's Q outside [lower, upper] widened by Q_BOUND_SLACK of its width, or not finite, in a
sample from Snapshot.judge_from on (the latest sample alone when it is None).
A run inside its bound gets no finding, whatever its settings look like; a run whose bound is not
known yet (no worker has reported its reward settings) is "unknown": no finding either.

The causes are those of the seed's incident analysis (../shared/seed/training-instability-analysis.md),
each scored in [0, 1] from the settings in force and the metrics that betray it.  Two primary
causes can make Q diverge on their own: the learning rate and the target network's speed; their
scores reach 1.  The others only make a divergence likelier or faster (the seed's "contributing
factors"), so their scores are capped lower (CONTRIBUTING_CAP) and they never outrank a primary
cause whose setting is clearly off.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .arithmetic import (blend_after, clamp01, fmt, half_life_steps, latest, log_factor, rate_per_s,
                         round_sig, window_max, window_min)

Series = list[tuple[float, float]]

# --- the references the causes are judged against (why each: the seed, or the defaults) -----------
# The seed's cure took lr 0.003 -> 0.001, the learner's default: 1e-3 is sane for Adam here.
LR_SANE = 1e-3
LR_FACTOR_SPAN = 30.0        # lr 30x the sane one scores the full lr factor (the seed's 3x: 0.32)
# Steps for the target to take half of the online network.  The seed's tau 0.012 took 57 steps and
# was judged too aggressive; its cure, tau 0.005, takes 138.  So 100 is the line; 1 step (tau = 1,
# or a hard copy every step) scores the full factor.
TARGET_HALF_LIFE_SANE = 100.0
TARGET_DISTANCE_NEAR_ZERO = 0.05   # ||online - target|| / ||online|| below this: the target is a copy
TAU_SANE = 0.005
HARD_REFRESH_SANE = 25_000   # the default: a hard copy every 25k steps beside tau 0.005
# The default gamma 0.995 bootstraps over a horizon of 1 / (1 - gamma) = 200 ticks; n_step 5 is the
# seed's cure (8 amplified errors).
HORIZON_SANE = 200.0
GAMMA_SANE = 0.995
N_STEP_SANE = 5
REPLAY_RATIO_SANE = 32.0     # samples trained per transition stored: the default pacing is 16
PRIORITY_RATIO_SANE = 10.0   # new rows' priority / mean priority: 10x still lets trained rows be drawn
EXPERT_FLOOR_SANE = 0.2      # the seed: the run diverged once the expert share sat at its floor
# The learner's health judge (health.py) widens the bound the same way before it calls a checkpoint
# unhealthy: a trained Q may overshoot a little; a diverging one passes it by orders of magnitude.
Q_BOUND_SLACK = 0.1
CONTRIBUTING_CAP = 0.5       # a contributing factor's score never exceeds this
MIN_SCORE = 0.05             # below it a cause is noise (a priority twice the mean), not a finding
# Findings within this share of the top score are cured together (the seed applied lr, tau and n_step);
# below it a finding is reported, not acted on.
CURE_SHARE_OF_TOP = 0.3
BLEND_STEPS = 100            # the seed's arithmetic: the target's blend after 100 steps

CAUSES = ("lr_too_high", "target_too_fast", "bootstrap_horizon", "replay_ratio", "priority_ratchet",
          "expert_share")
TITLES = {"lr_too_high": "Learning rate too high", "target_too_fast": "Target network updated too fast",
          "bootstrap_horizon": "Bootstrap horizon too long (gamma, n-step)",
          "replay_ratio": "Replay ratio too high (trained too often per transition)",
          "priority_ratchet": "Priority ratchet (new rows outrank every trained row)",
          "expert_share": "Expert share at a low floor"}


@dataclass(frozen=True)
class Snapshot:
    """What the doctor knows at `now`: each metric's recent samples, oldest first (names: the
    keys of history.METRICS, e.g. "q_max", "step"), and the learner's live settings ({} when the
    learner did not answer).  judge_from: Q sampled at or after this time decides the verdict (the
    doctor's memory, and not before its last action settled); None: the latest sample alone."""
    now: float
    series: dict[str, Series]
    settings: dict
    judge_from: float | None = None


@dataclass(frozen=True)
class Symptom:
    title: str
    lines: list[str]          # the numbers, one line each (the seed's code blocks)
    analysis: str


@dataclass(frozen=True)
class Finding:
    cause: str
    score: float
    evidence: dict[str, float]
    configuration: dict        # the settings behind it, as they are
    arithmetic: list[str]      # the maths, one line each
    cure: dict                 # {setting: new value}; {} when no live setting cures it
    advice: str = ""           # what else to do (a static setting, a restart)

    @property
    def title(self) -> str:
        return TITLES[self.cause]


@dataclass(frozen=True)
class Diagnosis:
    verdict: str               # "healthy", "divergent", "unknown"
    why: str
    now: float
    step: float | None
    frames: float | None
    steps_per_s: float | None
    bound: tuple[float, float] | None
    symptoms: list[Symptom] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)   # best first
    settings: dict = field(default_factory=dict)

    @property
    def divergent(self) -> bool:
        return self.verdict == "divergent"

    def to_cure(self) -> list[Finding]:
        """The findings the cure is made of: the top one and those within CURE_SHARE_OF_TOP of it."""
        if not self.findings:
            return []
        top = self.findings[0].score
        return [f for f in self.findings if f.score >= CURE_SHARE_OF_TOP * top]

    def cure(self) -> dict:
        out: dict = {}
        for f in self.to_cure():
            for name, value in f.cure.items():
                out.setdefault(name, value)
        return out


# --- Q against its bound ------------------------------------------------------------------------

def widened(bound: tuple[float, float]) -> tuple[float, float]:
    lo, hi = bound
    width = hi - lo
    if not math.isfinite(width):   # gamma = 1: one side unbounded; the other's slack is its own size
        width = max((abs(x) for x in bound if math.isfinite(x)), default=0.0)
    return lo - Q_BOUND_SLACK * width, hi + Q_BOUND_SLACK * width


def out_of_bound(q_min: float, q_max: float, bound: tuple[float, float]) -> bool:
    if not (math.isfinite(q_min) and math.isfinite(q_max)):
        return True
    lo, hi = widened(bound)
    return q_min < lo or q_max > hi


def _aligned(series: dict[str, Series], *names: str) -> list[tuple[float, ...]]:
    """(t, value of each name) at the times every one of `names` has a sample (the scrapes)."""
    maps = [dict(series.get(n, [])) for n in names]
    times = sorted(set(maps[0]).intersection(*maps[1:])) if maps else []
    return [(t, *(m[t] for m in maps)) for t in times]


def q_rows(series: dict[str, Series]) -> list[tuple[float, float, float]]:
    """(t, q_min, q_max) at every sample time both have."""
    return _aligned(series, "q_min", "q_max")


def current_bound(series: dict[str, Series]) -> tuple[float, float] | None:
    lo, hi = latest(series.get("q_bound_lower")), latest(series.get("q_bound_upper"))
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return None
    return lo, hi


def judge_q(series: dict[str, Series], judge_from: float | None = None) -> tuple[str, str]:
    """(verdict, why) from Q against its bound alone, over the samples from `judge_from` on (None:
    the latest); the worst of them is named."""
    rows = q_rows(series)
    if not rows:
        return "unknown", "no Q yet: the learner has not trained (or is not scraped)"
    recent = rows[-1:] if judge_from is None else [r for r in rows if r[0] >= judge_from]
    if not recent:
        return "unknown", "no Q sampled since the doctor's last action settled"
    for _, q_min, q_max in recent:
        if not (math.isfinite(q_min) and math.isfinite(q_max)):
            return "divergent", f"Q is not finite (min {q_min}, max {q_max})"
    bound = current_bound(series)
    if bound is None:
        return "unknown", "Q's bound is not known yet (no worker has reported its reward settings)"
    lo, hi = bound
    wlo, whi = widened(bound)
    q_max = max(r[2] for r in recent)
    q_min = min(r[1] for r in recent)
    if q_max > whi:
        times = f" ({fmt(q_max / hi)}x)" if hi > 0 else ""
        return "divergent", f"Q max {fmt(q_max)} above its bound {fmt(hi)}{times}"
    if q_min < wlo:
        return "divergent", f"Q min {fmt(q_min)} below its bound {fmt(lo)}"
    _, last_min, last_max = rows[-1]
    return "healthy", f"Q [{fmt(last_min)}, {fmt(last_max)}] inside its bound [{fmt(lo)}, {fmt(hi)}]"


# --- the causes ---------------------------------------------------------------------------------

def _grad_factor(series: dict[str, Series], max_grad_norm: float) -> tuple[float, dict]:
    """How hard the gradient pushes against the clip: 1 - the mean clip ratio, or how far the
    pre-clip norm passed the clip (log scale, 100x = 1)."""
    clip = window_min(series.get("grad_clip_ratio"))
    norm = window_max(series.get("grad_norm_max")) or window_max(series.get("grad_norm"))
    f = 0.0 if clip is None or math.isnan(clip) else clamp01(1.0 - clip)
    if norm is not None and max_grad_norm > 0 and math.isfinite(norm):
        f = max(f, log_factor(norm / max_grad_norm, 1.0, 100.0))
    return f, {"grad_norm_max": norm, "grad_clip_ratio_min": clip}


def lr_too_high(s: dict, series: dict[str, Series], steps_per_s: float | None) -> Finding:
    lr = latest(series.get("lr")) or float(s["lr"])   # the effective lr (after its schedule)
    max_grad_norm = float(s.get("max_grad_norm", 0.0))
    factor = log_factor(lr / LR_SANE, 1.0, LR_FACTOR_SPAN)
    grad, ev = _grad_factor(series, max_grad_norm)
    score = factor * (0.7 + 0.3 * grad)
    new_lr = round_sig(min(lr / 3.0, LR_SANE))
    arithmetic = [f"effective lr = {fmt(lr)} = {fmt(lr / LR_SANE)}x the sane {fmt(LR_SANE)}"]
    if steps_per_s:
        arithmetic.append(f"at {fmt(steps_per_s)} steps/s Adam moves each weight by up to lr per step: "
                          f"{fmt(lr * steps_per_s)} per second")
    if ev["grad_norm_max"] is not None and max_grad_norm > 0:
        arithmetic.append(f"pre-clip grad norm up to {fmt(ev['grad_norm_max'])} against the clip "
                          f"{fmt(max_grad_norm)}: {fmt(ev['grad_norm_max'] / max_grad_norm)}x")
    if ev["grad_clip_ratio_min"] is not None:
        arithmetic.append(f"clip ratio down to {fmt(ev['grad_clip_ratio_min'])} "
                          f"({fmt(100 * (1 - ev['grad_clip_ratio_min']))}% of the gradient cut)")
    arithmetic.append(f"cure: lr {fmt(lr)} -> {fmt(new_lr)} ({fmt(lr / new_lr)}x smaller steps)")
    cure = {"lr": new_lr} if new_lr < float(s["lr"]) else {}
    # a cosine schedule refuses an lr below its floor (lr_min): the floor comes down with it
    if cure and s.get("lr_schedule") == "cosine" and float(s.get("lr_min", 0.0)) > new_lr:
        cure["lr_min"] = new_lr
    return Finding("lr_too_high", score, {"lr": lr, "lr_factor": factor, "grad_factor": grad, **ev},
                   {"lr": s.get("lr"), "max_grad_norm": max_grad_norm}, arithmetic, cure)


def target_too_fast(s: dict, series: dict[str, Series], steps_per_s: float | None) -> Finding:
    soft = bool(s.get("use_soft_target", True))
    tau = float(s.get("tau", 0.0)) if soft else 0.0
    hard = int(s.get("hard_target_refresh_every_steps", 0))
    half = half_life_steps(tau, hard)
    factor = log_factor(TARGET_HALF_LIFE_SANE / half, 1.0, TARGET_HALF_LIFE_SANE) if half > 0 else 1.0
    distance = latest(series.get("target_distance"))
    near = 0.5 if distance is None or math.isnan(distance) else clamp01(1.0 - distance / TARGET_DISTANCE_NEAR_ZERO)
    score = factor * (0.7 + 0.3 * near)
    n = BLEND_STEPS
    new = blend_after(tau, hard, n)
    arithmetic = []
    when = f" (~{fmt(n / steps_per_s)} s at {fmt(steps_per_s)} steps/s)" if steps_per_s else ""
    if soft and tau > 0:
        arithmetic.append(f"after {n} steps{when}: target = (1 - {fmt(tau)})^{n} old + (1 - (1 - {fmt(tau)})^{n}) "
                          f"new = {fmt(1 - new)} old + {fmt(new)} new")
    if hard:
        arithmetic.append(f"hard copy every {hard:,} steps" + (f" ({fmt(hard / steps_per_s)} s)" if steps_per_s else "")
                          + (": the target is the online network again each time" if hard <= n else ""))
    if math.isfinite(half):
        arithmetic.append(f"the target takes half of the online network in {fmt(half)} steps "
                          f"(sane: >= {fmt(TARGET_HALF_LIFE_SANE)})")
    if distance is not None and not math.isnan(distance):
        arithmetic.append(f"target distance ||online - target|| / ||online|| = {fmt(distance)}"
                          + (" (the target is a copy of the online network)" if distance < 0.01 else ""))
    cure = {}
    if soft and tau > TAU_SANE:
        cure["tau"] = round_sig(min(tau / 2.0, TAU_SANE))
    if hard and hard < HARD_REFRESH_SANE:
        cure["hard_target_refresh_every_steps"] = HARD_REFRESH_SANE
    if cure:
        after = blend_after(cure.get("tau", tau), cure.get("hard_target_refresh_every_steps", hard), n)
        arithmetic.append(f"cure: after {n} steps target = {fmt(1 - after)} old + {fmt(after)} new")
    return Finding("target_too_fast", score, {"tau": tau, "hard_refresh": hard, "half_life_steps": half,
                                              "blend_after_100": new, "target_distance": distance,
                                              "target_factor": factor},
                   {"use_soft_target": soft, "tau": s.get("tau"), "hard_target_refresh_every_steps": hard},
                   arithmetic, cure)


def bootstrap_horizon(s: dict, series: dict[str, Series], steps_per_s: float | None) -> Finding:
    gamma, n = float(s.get("gamma", GAMMA_SANE)), int(s.get("n_step", N_STEP_SANE))
    horizon = math.inf if gamma >= 1 else 1.0 / (1.0 - gamma)
    f_h = log_factor(horizon / HORIZON_SANE, 1.0, 10.0) if math.isfinite(horizon) else 1.0
    f_n = clamp01((n - N_STEP_SANE) / 10.0)
    score = CONTRIBUTING_CAP * max(f_h, f_n)
    q_max = latest(series.get("q_max"))
    arithmetic = [f"gamma^n = {fmt(gamma)}^{n} = {fmt(gamma ** n)}: each target bootstraps {n} steps ahead",
                  f"horizon 1 / (1 - gamma) = {fmt(horizon)} ticks (sane: <= {fmt(HORIZON_SANE)})"]
    if q_max is not None and math.isfinite(q_max):
        arithmetic.append(f"TD target = r + {fmt(gamma ** n)} x Q(s+{n}): with Q at {fmt(q_max)}, "
                          f"the target carries {fmt(gamma ** n * q_max)}")
    cure = {}
    if n > N_STEP_SANE:
        cure["n_step"] = N_STEP_SANE
    if gamma > GAMMA_SANE:
        cure["gamma"] = GAMMA_SANE
    return Finding("bootstrap_horizon", score, {"gamma": gamma, "n_step": n, "gamma_n": gamma ** n,
                                                "horizon": horizon}, {"gamma": gamma, "n_step": n}, arithmetic, cure)


def replay_ratio(s: dict, series: dict[str, Series], steps_per_s: float | None) -> Finding:
    paced = float(s.get("training_steps_per_sample", 0.0))
    measured = latest(series.get("replay_ratio"))
    # unpaced (0): a benchmark or test trains as fast as it can; the ratio is then no setting's fault
    ratio = paced if paced > 0 else 0.0
    score = CONTRIBUTING_CAP * 0.8 * log_factor(ratio / REPLAY_RATIO_SANE, 1.0, 10.0) if ratio else 0.0
    batch = int(s.get("batch_size", 0))
    arithmetic = [f"training_steps_per_sample = {fmt(paced)}" + (" (unpaced)" if paced == 0 else
                                                                  f": every transition trained on {fmt(paced)} times")]
    if measured is not None and not math.isnan(measured):
        arithmetic.append(f"replay ratio served / stored = {fmt(measured)}")
    if steps_per_s and batch:
        arithmetic.append(f"samples/s = batch {batch:,} x {fmt(steps_per_s)} steps/s = {fmt(batch * steps_per_s)}")
    cure = {"training_steps_per_sample": paced / 2} if paced > REPLAY_RATIO_SANE else {}
    return Finding("replay_ratio", score, {"training_steps_per_sample": paced, "replay_ratio": measured},
                   {"training_steps_per_sample": paced, "batch_size": batch}, arithmetic, cure)


def priority_ratchet(s: dict, series: dict[str, Series], steps_per_s: float | None) -> Finding:
    new, mean = latest(series.get("new_priority")), latest(series.get("priority_mean"))
    share = latest(series.get("sampled_new_share"))
    ratio = new / mean if new is not None and mean and not math.isnan(new) else None
    f = log_factor(ratio / PRIORITY_RATIO_SANE, 1.0, 100.0) if ratio else 0.0
    if share is not None and not math.isnan(share):
        f = 0.5 * f + 0.5 * clamp01(share)
    prioritized = bool(s.get("prioritized", True))
    score = CONTRIBUTING_CAP * f if prioritized else 0.0
    arithmetic = []
    if ratio is not None:
        arithmetic.append(f"new rows enter at priority {fmt(new)} = {fmt(ratio)}x the mean {fmt(mean)}")
    if share is not None and not math.isnan(share):
        arithmetic.append(f"share of the latest sample never trained on: {fmt(share)}")
    arithmetic.append("a rollback makes the replay forget its maximum priority (PriorityReset)")
    return Finding("priority_ratchet", score, {"priority_ratio": ratio, "sampled_new_share": share},
                   {"prioritized": prioritized}, arithmetic, {},
                   advice="restart the replay with PER_NEW_PRIORITY_CAP=2 to keep one spike from lasting")


def expert_share(s: dict, series: dict[str, Series], steps_per_s: float | None) -> Finding:
    ratio = latest(series.get("expert_ratio"))
    floor = float(s.get("expert_ratio_min", 0.0))
    at_floor = ratio is not None and not math.isnan(ratio) and ratio <= floor + 0.01
    score = CONTRIBUTING_CAP * 0.6 * clamp01((EXPERT_FLOOR_SANE - floor) / EXPERT_FLOOR_SANE) if at_floor else 0.0
    arithmetic = [f"expert ratio {fmt(ratio)} at its floor expert_ratio_min = {fmt(floor)}: the network drives "
                  f"{fmt(100 * (1 - ratio))}% of the actions" if at_floor else
                  f"expert ratio {fmt(ratio)} above its floor {fmt(floor)}"]
    cure = {"expert_ratio_min": EXPERT_FLOOR_SANE} if at_floor and floor < EXPERT_FLOOR_SANE else {}
    return Finding("expert_share", score, {"expert_ratio": ratio, "expert_ratio_min": floor},
                   {"expert_ratio_min": floor}, arithmetic, cure)


JUDGES = (lr_too_high, target_too_fast, bootstrap_horizon, replay_ratio, priority_ratchet, expert_share)


# --- the diagnosis ------------------------------------------------------------------------------

def diagnose(snap: Snapshot) -> Diagnosis:
    series, settings = snap.series, snap.settings
    verdict, why = judge_q(series, snap.judge_from)
    step, frames = latest(series.get("step")), latest(series.get("global_frames"))
    steps_per_s = rate_per_s(series.get("step"))
    bound = current_bound(series)
    base = dict(now=snap.now, step=step, frames=frames, steps_per_s=steps_per_s, bound=bound, settings=settings)
    if verdict != "divergent":
        return Diagnosis(verdict, why, **base)
    from .symptoms import symptoms   # the numbers for the report, only when there is a divergence
    findings = []
    if settings:
        findings = [judge(settings, series, steps_per_s) for judge in JUDGES]
        findings = [f for f in findings if f.score >= MIN_SCORE]
        if not findings:   # no setting stands out: lowering lr is the general cure (the seed's first fix)
            f = lr_too_high(settings, series, steps_per_s)
            findings = [Finding(f.cause, 0.05, f.evidence, f.configuration,
                                f.arithmetic + ["no setting stands out: a lower lr is the general first cure"], f.cure)]
        findings.sort(key=lambda f: (-f.score, CAUSES.index(f.cause)))
    else:
        why += "; the live settings are not known (the learner's control endpoint did not answer)"
    return Diagnosis(verdict, why, symptoms=symptoms(series, bound), findings=findings, **base)


__all__ = ["CAUSES", "Diagnosis", "Finding", "Snapshot", "Symptom", "diagnose", "judge_q", "out_of_bound",
           "q_rows", "widened"]
