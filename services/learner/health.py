"""Is a checkpoint healthy?  A verdict from the learner's statistics since the previous checkpoint.

Pure: no I/O, no torch.  The learner adds every optimizer step's statistics (dqn.StepStats:
q_min, q_max, grad_norm, loss, applied) to a `SinceCheckpoint`, and at each checkpoint `judge()`s
them and starts a new one.  A rollback (`python -m services.learner.ctl rollback`) goes back to
the newest checkpoint judged healthy; retention keeps healthy ones over hours (checkpoint.py).

A checkpoint is healthy when, since the previous one:
  * no batch was skipped for a non-finite loss or gradient;
  * the online Q over the sampled batches stayed finite, and inside [lo, hi] (with a slack) when
    the bound of the returns is known (passed in: `q_bound`);
  * the loss and the pre-clip gradient norm stayed finite and below their limits.
With no optimizer step since the previous checkpoint the network has not changed: it keeps the
previous verdict.  Old checkpoints without a verdict are of unknown health: not healthy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

# A trained Q may overshoot the exact bound of the discounted returns a little (function
# approximation, bootstrapping from a target that lags); a diverging run passes it by orders of
# magnitude (the seed's Q reached 2,000 where ~100 was possible).  So the bound is widened by this
# share of its width on each side before a Q outside it counts against the checkpoint.
Q_BOUND_SLACK = 0.1
# Clipping caps the step, not the gradient: the pre-clip norm of a healthy run stays within ~10x
# MAX_GRAD_NORM (the seed's unstable run swung ~2x), and only a blown-up loss (a diverging Q, a
# poisoned batch) puts it two orders of magnitude above the clip.
GRAD_NORM_CLIP_MULTIPLE = 100.0
# The TD loss is Huber, linear in |TD error|: a loss of 1e6 means TD errors of ~1e6 Q units, which
# no reward scale the workers allow (REWARD_SCALE <= 1, a few hundred points a tick at most)
# reaches before divergence.  A finite loss above it still marks the checkpoint.
LOSS_LIMIT = 1e6
UNKNOWN = "health unknown: the checkpoint was written before health marks"


@dataclass
class SinceCheckpoint:
    """Running figures of the optimizer steps since the last checkpoint.  `add()` takes any object
    with dqn.StepStats's q_min, q_max, grad_norm, loss and applied.  A non-finite value is kept
    (NaN wins every min and max), so judge() sees it whatever came after."""
    steps: int = 0                 # steps applied
    nonfinite: int = 0             # batches skipped for a non-finite loss or gradient
    q_min: float = math.inf
    q_max: float = -math.inf
    grad_norm_max: float = 0.0
    loss_max: float = -math.inf

    def add(self, stats) -> None:
        if not stats.applied:
            self.nonfinite += 1
            return
        self.steps += 1
        self.q_min = _least(self.q_min, stats.q_min)
        self.q_max = _most(self.q_max, stats.q_max)
        self.grad_norm_max = _most(self.grad_norm_max, stats.grad_norm)
        self.loss_max = _most(self.loss_max, stats.loss)

    def reset(self) -> None:
        self.__init__()


def _most(a: float, b: float) -> float:
    return math.nan if math.isnan(a) or math.isnan(b) else max(a, b)


def _least(a: float, b: float) -> float:
    return math.nan if math.isnan(a) or math.isnan(b) else min(a, b)


@dataclass
class Verdict:
    healthy: bool
    reasons: list[str] = field(default_factory=list)   # why not, one short line each ([] when healthy)

    @classmethod
    def of_checkpoint(cls, saved: dict) -> "Verdict":
        """The verdict a checkpoint carries; not healthy (UNKNOWN) when it carries none."""
        health = saved.get("health") if isinstance(saved, dict) else None
        if not isinstance(health, dict) or not isinstance(health.get("healthy"), bool):
            return cls(False, [UNKNOWN])
        return cls(health["healthy"], [str(r) for r in health.get("reasons") or []])


def judge(since: SinceCheckpoint, max_grad_norm: float, q_bound: tuple[float, float] | None = None,
          previous: Verdict | None = None) -> Verdict:
    """The health of the network after the steps `since` sums up.  max_grad_norm: the clip in
    force (0 = off: then the gradient norm need only be finite); q_bound: (lo, hi) of the returns
    when known; previous: the verdict of the network before these steps (None: a new network)."""
    if since.steps == 0 and since.nonfinite == 0:   # not trained since: the same network as before
        return Verdict(previous.healthy, list(previous.reasons)) if previous is not None else Verdict(True)
    reasons = []
    if since.nonfinite:
        reasons.append(f"{since.nonfinite} non-finite batch(es) skipped")
    if since.steps:
        reasons += _q_reasons(since, q_bound)
        if not math.isfinite(since.loss_max):
            reasons.append(f"loss not finite ({since.loss_max})")
        elif since.loss_max > LOSS_LIMIT:
            reasons.append(f"loss {since.loss_max:.4g} above {LOSS_LIMIT:g}")
        limit = GRAD_NORM_CLIP_MULTIPLE * max_grad_norm
        if not math.isfinite(since.grad_norm_max):
            reasons.append(f"grad norm not finite ({since.grad_norm_max})")
        elif max_grad_norm > 0 and since.grad_norm_max > limit:
            reasons.append(f"grad norm {since.grad_norm_max:.4g} above {GRAD_NORM_CLIP_MULTIPLE:g} x "
                           f"MAX_GRAD_NORM ({limit:g})")
    return Verdict(not reasons, reasons)


def _q_reasons(since: SinceCheckpoint, q_bound: tuple[float, float] | None) -> list[str]:
    if not (math.isfinite(since.q_min) and math.isfinite(since.q_max)):
        return [f"Q not finite (min {since.q_min}, max {since.q_max})"]
    if q_bound is None:
        return []
    lo, hi = q_bound
    width = hi - lo
    if not math.isfinite(width):   # gamma = 1 leaves a side unbounded: the other's slack is its own size
        width = max((abs(x) for x in q_bound if math.isfinite(x)), default=0.0)
    slack = Q_BOUND_SLACK * width
    out = []
    if since.q_min < lo - slack:
        out.append(f"Q min {since.q_min:.4g} below the bound {lo:.4g}")
    if since.q_max > hi + slack:
        out.append(f"Q max {since.q_max:.4g} above the bound {hi:.4g}")
    return out
