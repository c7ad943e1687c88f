"""The learner's check of a replay sample before it is trained on (pure: no I/O).

Why: one poisoned row once stopped the run.  An action outside 0..NUM_ACTIONS-1 made the
network's gather raise (a crash, then the same row drawn again after the restart); a non-finite
state, reward, discount or weight made the loss non-finite, so the whole batch was skipped, its
priorities never fell, and the row kept being drawn.  So each row is checked, a bad one is taken
out of the batch and its replay slot goes back at the floor priority (it stops being drawn), and
the rest is trained on.

Reasons (the label of tempest_learner_rejected_rows_total; a row is counted once, under the first
that applies):
  - action_out_of_range: action not in 0..NUM_ACTIONS-1, or an expert label (expert_action) not
    in -1..NUM_ACTIONS-1 (it indexes Q in the imitation loss as the action does in the TD loss);
  - nonfinite: NaN or infinity in state, next_state, reward, discount or weight;
  - value_out_of_range: finite but impossible: |state| or |next_state| > MAX_ABS_STATE (every
    feature is within [-1, 1]), |reward| > MAX_ABS_RETURN (an n-step sum of rows the wire bounds),
    discount outside [0, 1] (gamma^h), weight outside [0, MAX_WEIGHT] (PER weights are <= 1).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from tempest_common.actions import NUM_ACTIONS
from tempest_common.messages import MAX_ABS_REWARD, NO_ACTION, SampleReply

REJECT_REASONS = ("action_out_of_range", "nonfinite", "value_out_of_range")
MAX_ABS_STATE = 1e6
MAX_ABS_RETURN = MAX_ABS_REWARD * 100   # N_STEP <= 100 rows of |reward| <= MAX_ABS_REWARD
MAX_WEIGHT = 1e6
_ROW_FIELDS = [f.name for f in dataclasses.fields(SampleReply) if f.metadata.get("rows")]


@dataclass(frozen=True)
class Screened:
    kept: SampleReply | None          # the good rows (None when there is none)
    bad_index: np.ndarray             # replay slots of the bad rows (uint64)
    rejected: dict[str, int]          # reason -> bad rows (only reasons that occurred)


def _rows_within(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Per row: every value finite and in [lo, hi] (NaN compares false)."""
    ok = (a >= lo) & (a <= hi)
    return ok.all(axis=1) if ok.ndim == 2 else ok


def _rows_finite(a: np.ndarray) -> np.ndarray:
    ok = np.isfinite(a)
    return ok.all(axis=1) if ok.ndim == 2 else ok


def screen_sample(reply: SampleReply) -> Screened:
    """Split `reply` into the rows fit to train on and the bad ones (see the module docstring)."""
    action_ok = ((reply.action >= 0) & (reply.action < NUM_ACTIONS)
                 & (reply.expert_action >= NO_ACTION) & (reply.expert_action < NUM_ACTIONS))
    values = ((reply.state, -MAX_ABS_STATE, MAX_ABS_STATE), (reply.next_state, -MAX_ABS_STATE, MAX_ABS_STATE),
              (reply.reward, -MAX_ABS_RETURN, MAX_ABS_RETURN), (reply.discount, 0.0, 1.0),
              (reply.weight, 0.0, MAX_WEIGHT))
    in_range = np.logical_and.reduce([_rows_within(a, lo, hi) for a, lo, hi in values])
    good = action_ok & in_range
    if good.all():  # the common case: one pass over the data, nothing copied (an empty reply: nothing to train)
        return Screened(reply if good.size else None, np.zeros(0, np.uint64), {})
    finite = np.logical_and.reduce([_rows_finite(a) for a, _, _ in values])
    counts = {"action_out_of_range": int((~action_ok).sum()),
              "nonfinite": int((action_ok & ~finite).sum()),
              "value_out_of_range": int((action_ok & finite & ~in_range).sum())}
    kept = dataclasses.replace(reply, **{name: getattr(reply, name)[good] for name in _ROW_FIELDS}) \
        if good.any() else None
    return Screened(kept, reply.index[~good].astype(np.uint64), {k: n for k, n in counts.items() if n})
