"""Checkpoints: model, target, optimizer, counters, schedule state, performance windows and the
settings in force, in one file written atomically (temp file + rename).

Two kinds share that content: rolling checkpoints `checkpoint-<step>.pt` (the newest KEEP kept;
a run resumes from the newest) and marks `mark-<global frames>.pt`, written as the run's global
frame count crosses each multiple of CHECKPOINT_EVERY_FRAMES and never deleted, so the network
at 250k, 500k, ... frames can be evaluated or compared later.  Retention only ever touches
rolling checkpoints.

A run resumes only from a checkpoint whose online network has the configured shape and whose
counters are possible (0..2^53: a forged heartbeat once checkpointed a frame count past 2^64, and
every resumed learner crashed on it); any other, or a file that cannot be read, is refused with
one line saying so (load_for_resume).

Loaded with torch.load(weights_only=True): a checkpoint holds tensors and plain Python values
only, so loading one never runs code from it.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from tempest_common.messages import MAX_COUNTER
from tempest_common.network import shape_from_state_dict

from .bookkeeper import Bookkeeper

PREFIX = "checkpoint-"
MARK_PREFIX = "mark-"
KEEP = 3


def _write(path: Path, state: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({**state, "saved_at": time.time()}, tmp)
    os.replace(tmp, path)
    return path


def save(directory: str | os.PathLike, state: dict, steps: int) -> Path:
    """A rolling checkpoint; the older rolling ones beyond the newest KEEP go (marks stay)."""
    d = Path(directory)
    path = _write(d / f"{PREFIX}{steps:012d}.pt", state)
    for old in sorted(d.glob(f"{PREFIX}*.pt"))[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def save_mark(directory: str | os.PathLike, state: dict, mark: int) -> Path:
    """The checkpoint of frame mark `mark` (named after the mark, not the frame count it was written at)."""
    return _write(Path(directory) / f"{MARK_PREFIX}{mark:012d}.pt", state)


def mark_due(global_frames: int, every: int, last_mark: int) -> int | None:
    """The latest multiple of `every` reached by `global_frames` if it is past `last_mark` (marks
    skipped over in one jump are not written: only the latest); None when none is due or every = 0."""
    if every <= 0:
        return None
    mark = global_frames // every * every
    return mark if mark > last_mark else None


def latest(directory: str | os.PathLike) -> Path | None:
    """The newest rolling checkpoint (marks are not resumed from)."""
    found = sorted(Path(directory).glob(f"{PREFIX}*.pt")) if Path(directory).is_dir() else []
    return found[-1] if found else None


def load(path: str | os.PathLike, device: str = "cpu") -> dict:
    return torch.load(path, map_location=device, weights_only=True)


class Unresumable(Exception):
    """A checkpoint this learner cannot carry on from; the message is one line for the operator."""


Shape = tuple[int, tuple[int, ...], int, bool]   # state dim, hidden widths, actions, LayerNorm


def network_shape(online: dict) -> Shape:
    return shape_from_state_dict(online)


def _describe(shape: Shape) -> str:
    state_dim, hidden, actions, layer_norm = shape
    widths = [",".join(map(str, hidden)) + (" with LayerNorm" if layer_norm else "")] if hidden else []
    return " -> ".join([str(state_dim), *widths, str(actions)])


def load_for_resume(path: str | os.PathLike, device: str, shape: Shape) -> dict:
    """The checkpoint at `path` if its online network has `shape`; Unresumable otherwise."""
    advice = "start a new run with RESUME=0 or another CHECKPOINT_DIR"
    try:
        state = load(path, device)
        found = network_shape(state["online"])
    except Exception as exc:  # damaged or foreign: whatever the reader's complaint, the way out is the same
        # torch's own unpickling message is a paragraph about weights_only; one phrase says it here
        reason = ("not a torch file of tensors and plain values" if type(exc).__name__ == "UnpicklingError"
                  else f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}")
        raise Unresumable(f"{path} cannot be read as a learner checkpoint ({reason}): {advice}") from None
    if found != shape:
        raise Unresumable(f"{path} does not fit this network (checkpoint: {_describe(found)}; "
                          f"configured: {_describe(shape)}): {advice}")
    try:
        check_counters(state)
    except (ValueError, TypeError, KeyError) as exc:
        raise Unresumable(f"{path} holds impossible counters ({exc}): {advice}") from None
    return state


def check_counters(state: dict) -> None:
    """ValueError naming the first counter of `state` (a checkpoint_dict()) outside 0..2^53."""
    if "bookkeeper" in state:
        Bookkeeper().load_state_dict(state["bookkeeper"])
    for name, value in state.get("counters", {}).items():
        if not 0 <= int(value) <= MAX_COUNTER:
            raise ValueError(f"{name}={int(value)} is outside 0..2^53")
