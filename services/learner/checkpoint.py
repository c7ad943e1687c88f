"""Checkpoints: model, target, optimizer, counters, schedule state, performance windows, the
settings in force and the run id, in one file written atomically (temp file, fsync, rename: a
kill -9 or a power cut mid-write leaves the previous file, never a truncated one).

Two kinds share that content: rolling checkpoints `checkpoint-<run id>-<step>.pt` (each run keeps
its own newest KEEP, and healthy ones over hours: `to_keep`) and marks `mark-<global frames>.pt`,
written as the run's global frame count crosses each multiple of CHECKPOINT_EVERY_FRAMES and never
deleted, so the network at 250k, 500k, ... frames can be evaluated or compared later
(bench/learning.py and services/emulator/evaluate.py read marks by that name).  Retention only ever deletes the saving run's own older rolling
checkpoints: the run id is in the name because a new run in a reused folder once had its
checkpoint sorted below the old run's and deleted as it was written, and resumed the old run.

Which one a run resumes from (resume_point): the most recent run's newest checkpoint, by the time
written inside each file (not by name: names of different runs do not sort by time).  One that
cannot be resumed from (truncated, garbage, a newer format, impossible counters, parts missing)
is passed over with one line naming it and why, for the previous one of that run, then older
runs': a damaged newest file once made every restart exit, a crash loop.  One whose network is
not the configured one stops the search: the configuration changed, and the operator decides.

Format versions (FORMAT_VERSION, in the file): 1 = no `format_version` field, named
`checkpoint-<step>.pt`; read as they are (their content is today's; the run id they hold, or
"unnamed").  2 = the field and the run id in the name.  A newer version is refused.

Health (health.py): each checkpoint carries the learner's verdict on its network, "health":
{"healthy", "reasons", "wall_time", "step", "global_frames"}; one without it (written before) is of
unknown health, never taken for healthy.  A rollback (rollback_point) restores the run's newest
healthy checkpoint, or the one at a given step.

Loaded with torch.load(weights_only=True): a checkpoint holds tensors and plain Python values
only, so loading one never runs code from it.
"""
from __future__ import annotations

import logging
import math
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tempest_common.messages import MAX_COUNTER
from tempest_common.network import CHECKPOINT_FORMAT_VERSION, shape_from_state_dict

from .bookkeeper import Bookkeeper

log = logging.getLogger("learner.checkpoint")
PREFIX = "checkpoint-"
MARK_PREFIX = "mark-"
KEEP = 3
# Healthy checkpoints kept beside the newest KEEP, so a rollback finds one from before the trouble
# began.  The slowest alert, TempestQValueCollapse, looks back 1 h and fires after 2 m more: when
# it fires the trouble may be 62 minutes old, so the newest healthy checkpoint older than
# OLDEST_HEALTHY_AGE_S (that, with a few minutes' margin) is kept whatever its age, and so is the
# newest healthy one.  Between them, over the last HEALTHY_HISTORY_S, healthy ones at least
# HEALTHY_SPACING_S apart (as fine a choice as alerts of 5-15 minute windows can use; ~12 files).
HEALTHY_HISTORY_S = 2 * 3600
OLDEST_HEALTHY_AGE_S = 65 * 60
HEALTHY_SPACING_S = 10 * 60
FORMAT_VERSION = CHECKPOINT_FORMAT_VERSION
ADVICE = "start a new run with RESUME=0 or another CHECKPOINT_DIR"
_NAME = re.compile(r"checkpoint-(?:(?P<run>.+)-)?(?P<step>\d+)\.pt")   # no run: format 1
NEEDED = ("online", "target", "optimizer", "bookkeeper", "counters", "live")
NEEDED_COUNTERS = ("steps", "samples", "target_age", "weights_version")


def new_run_id() -> str:
    """A new run's id: its start time (UTC, reads as a date) and 6 random hex digits (two runs
    started in the same second still differ)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def name_part(run_id) -> str:
    """`run_id` as it appears in file names: letters, digits, '.', '_', '-' (others become '_'), 64 at most."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(run_id))[:64] or "unnamed"


def _write(path: Path, state: dict, now: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")   # not *.pt: never taken for a checkpoint, even if left by a kill
    with open(tmp, "wb") as f:
        torch.save({**state, "format_version": FORMAT_VERSION, "saved_at": time.time() if now is None else now}, f)
        f.flush()
        os.fsync(f.fileno())   # the data on disk before the rename makes it the checkpoint
    os.replace(tmp, path)
    return path


def save(directory: str | os.PathLike, state: dict, steps: int, now: float | None = None) -> Path:
    """A rolling checkpoint of run state["run_id"] ('unnamed' if none), written at `now` (unix
    seconds, default the time); that run's older rolling ones go unless to_keep keeps them.  Other
    runs' files, format-1 names and marks stay."""
    d = Path(directory)
    run_id = str(state.get("run_id") or "unnamed")
    run = name_part(run_id)
    now = time.time() if now is None else now
    path = _write(d / f"{PREFIX}{run}-{steps:012d}.pt", {**state, "run_id": run_id}, now)
    own = [Saved(p, int(m["step"]), *_when_and_health(p)) for p in d.glob(f"{PREFIX}*.pt")
           if (m := _NAME.fullmatch(p.name)) and m["run"] == run]
    keep = to_keep(own, now)
    for old in own:
        if old.path not in keep:
            old.path.unlink(missing_ok=True)
    return path


@dataclass
class Saved:
    """One rolling checkpoint of a run, as retention sees it."""
    path: Path
    step: int
    when: float      # saved_at inside it (the file's mtime when it cannot be read)
    healthy: bool    # its verdict says healthy (unknown or unreadable: False)


def to_keep(files: list[Saved], now: float) -> set[Path]:
    """Which of one run's rolling checkpoints stay: the newest KEEP by step; the newest healthy
    one; the newest healthy one at least OLDEST_HEALTHY_AGE_S old (both whatever their age); and,
    over the last HEALTHY_HISTORY_S, the oldest healthy one and each later healthy one at least
    HEALTHY_SPACING_S after the last one kept.  That chain starts from the oldest, so what it kept
    it keeps while in the history (from the newest, it would shift with every new file and delete
    all the older ones in turn)."""
    by_step = sorted(files, key=lambda f: f.step)
    keep = {f.path for f in by_step[-KEEP:]}
    healthy = [f for f in by_step if f.healthy]     # oldest first
    if not healthy:
        return keep
    keep.add(healthy[-1].path)
    old = [f for f in healthy if now - f.when >= OLDEST_HEALTHY_AGE_S]
    if old:
        keep.add(old[-1].path)
    last = -math.inf
    for f in healthy:
        if now - f.when <= HEALTHY_HISTORY_S and f.when - last >= HEALTHY_SPACING_S:
            keep.add(f.path)
            last = f.when
    return keep


def is_healthy(state) -> bool:
    """The checkpoint `state` carries a verdict, and it says healthy (none: unknown, not healthy)."""
    health = state.get("health") if isinstance(state, dict) else None
    return isinstance(health, dict) and health.get("healthy") is True


def _peek(path: Path):
    """The checkpoint at `path` with its tensors mapped, not read (cheap for a survey)."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def _when_and_health(path: Path) -> tuple[float, bool]:
    try:
        state = _peek(path)
        saved_at = state.get("saved_at") if isinstance(state, dict) else None
        if isinstance(saved_at, (int, float)) and math.isfinite(saved_at):
            return float(saved_at), is_healthy(state)
        return path.stat().st_mtime, is_healthy(state)
    except Exception:  # noqa: BLE001 - damaged or gone: not healthy, aged by its mtime if it has one
        try:
            return path.stat().st_mtime, False
        except OSError:
            return 0.0, False


def save_mark(directory: str | os.PathLike, state: dict, mark: int) -> Path:
    """The checkpoint of frame mark `mark` (named after the mark, not the frame count it was written
    at): mark-<mark>.pt.  Marks are never deleted, so another run's mark of that name is kept: this
    run's is then mark-<mark>-<run id>.pt (a second run in a reused folder used to overwrite them)."""
    path = Path(directory) / f"{MARK_PREFIX}{mark:012d}.pt"
    if path.exists() and _run_of(path) != state.get("run_id"):
        path = path.with_name(f"{MARK_PREFIX}{mark:012d}-{name_part(state.get('run_id', 'unnamed'))}.pt")
        log.warning("checkpoint: %s%012d.pt belongs to another run: this run's mark goes to %s", MARK_PREFIX, mark,
                    path.name)
    return _write(path, state)


def _run_of(path: Path):
    """The run id inside a checkpoint file; None when it cannot be read (a damaged mark is another run's too)."""
    try:
        return _peek(path).get("run_id")
    except Exception:  # noqa: BLE001 - unreadable: not this run's
        return None


def mark_due(global_frames: int, every: int, last_mark: int) -> int | None:
    """The latest multiple of `every` reached by `global_frames` if it is past `last_mark` (marks
    skipped over in one jump are not written: only the latest); None when none is due or every = 0."""
    if every <= 0:
        return None
    mark = global_frames // every * every
    return mark if mark > last_mark else None


def load(path: str | os.PathLike, device: str = "cpu") -> dict:
    return torch.load(path, map_location=device, weights_only=True)


def _reason(exc: Exception) -> str:
    # torch's own unpickling message is a paragraph about weights_only; one phrase says it here
    if type(exc).__name__ == "UnpicklingError":
        return "not a torch file of tensors and plain values"
    first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0]   # torch adds sentences of advice
    return f"{type(exc).__name__}: {first}"


@dataclass
class Found:
    """A rolling checkpoint file as surveyed: its run, when it was written, and why it cannot be read."""
    path: Path
    run: str
    when: float    # saved_at inside it; the file's mtime when it cannot be read
    error: str | None
    step: int = -1           # from its name
    healthy: bool = False    # its verdict says healthy (is_healthy)


def survey(directory: str | os.PathLike) -> list[Found]:
    """The rolling checkpoints in `directory`, in resume order: the most recent run first (the run
    whose newest checkpoint was written last), each run's newest first.  Tensors are mapped, not read."""
    d = Path(directory)
    found = []
    for path in (d.glob(f"{PREFIX}*.pt") if d.is_dir() else ()):
        m = _NAME.fullmatch(path.name)
        if m is None:
            continue
        try:
            when, run, error = path.stat().st_mtime, m["run"] or "", None
        except OSError:   # gone since the listing (another learner's retention)
            continue
        healthy = False
        try:
            state = _peek(path)
            healthy = is_healthy(state)
            if isinstance(state, dict):
                saved_at = state.get("saved_at")
                if isinstance(saved_at, (int, float)) and math.isfinite(saved_at):   # NaN would break the sort
                    when = float(saved_at)
                run = run or name_part(state.get("run_id") or "unnamed")   # format 1: the run id inside
        except Exception as exc:  # noqa: BLE001 - damaged or foreign: said when it is reached
            error = _reason(exc)
        found.append(Found(path, run, when, error, int(m["step"]), healthy))
    newest: dict[str, float] = {}
    for f in found:
        newest[f.run] = max(newest.get(f.run, f.when), f.when)
    return sorted(found, key=lambda f: (newest[f.run], f.run, f.when), reverse=True)


def latest(directory: str | os.PathLike) -> Path | None:
    """The newest readable rolling checkpoint of the most recent run (marks are not resumed from)."""
    return next((f.path for f in survey(directory) if f.error is None), None)


class Unresumable(Exception):
    """A checkpoint this learner cannot carry on from; str() is one line for the operator.
    `fallback`: an older checkpoint may be tried instead (False: the configuration does not fit)."""

    def __init__(self, path, problem: str, fallback: bool = True):
        super().__init__(f"{path} {problem}: {ADVICE}")
        self.path, self.problem, self.fallback = Path(path), problem, fallback


Shape = tuple[int, tuple[int, ...], int, bool]   # state dim, hidden widths, actions, LayerNorm


def network_shape(online: dict) -> Shape:
    return shape_from_state_dict(online)


def _describe(shape: Shape) -> str:
    state_dim, hidden, actions, layer_norm = shape
    widths = [",".join(map(str, hidden)) + (" with LayerNorm" if layer_norm else "")] if hidden else []
    return " -> ".join([str(state_dim), *widths, str(actions)])


def migrate(path, state) -> dict:
    """`state` in format FORMAT_VERSION: format 1 (no field) gains its run id ('unnamed' if it
    had none); a newer or a nonsensical version is Unresumable."""
    if not isinstance(state, dict):
        raise Unresumable(path, f"cannot be read as a learner checkpoint (it holds a {type(state).__name__})")
    version = state.get("format_version", 1)
    if type(version) is not int or version < 1:
        raise Unresumable(path, f"cannot be read as a learner checkpoint (format_version {version!r})")
    if version > FORMAT_VERSION:
        raise Unresumable(path, f"was written by a newer learner (checkpoint format {version}; this learner "
                                f"reads formats 1 to {FORMAT_VERSION})")
    if version == 1:
        state = {**state, "run_id": str(state.get("run_id") or "unnamed"), "format_version": FORMAT_VERSION}
    return state


def load_for_resume(path: str | os.PathLike, device: str, shape: Shape) -> dict:
    """The checkpoint at `path`, migrated, if its online network has `shape`, its counters are
    possible (0..2^53: a forged heartbeat once checkpointed a frame count past 2^64, and every
    resumed learner crashed on it) and nothing a resume needs is missing; Unresumable otherwise."""
    try:
        state = load(path, device)
    except Exception as exc:  # noqa: BLE001 - whatever the reader's complaint, the way out is the same
        raise Unresumable(path, f"cannot be read as a learner checkpoint ({_reason(exc)})") from None
    state = migrate(path, state)
    try:
        found = network_shape(state["online"])
    except Exception as exc:  # noqa: BLE001
        raise Unresumable(path, f"cannot be read as a learner checkpoint ({_reason(exc)})") from None
    if found != shape:
        raise Unresumable(path, f"does not fit this network (checkpoint: {_describe(found)}; "
                                f"configured: {_describe(shape)})", fallback=False)
    try:
        check_counters(state)
    except Exception as exc:  # noqa: BLE001 - ValueError names the counter; anything else: not counters at all
        raise Unresumable(path, f"holds impossible counters ({exc})") from None
    counters = state["counters"] if isinstance(state["counters"], dict) else {}
    missing = [k for k in NEEDED if k not in state] + [f"counters.{k}" for k in NEEDED_COUNTERS if k not in counters]
    if missing:   # restore() would fail half-way on it
        raise Unresumable(path, f"is not a whole learner checkpoint (no {', '.join(missing)})")
    return state


def check_counters(state: dict) -> None:
    """ValueError naming the first counter of `state` (a checkpoint_dict()) outside 0..2^53."""
    if "bookkeeper" in state:
        Bookkeeper().load_state_dict(state["bookkeeper"])
    for name, value in state.get("counters", {}).items():
        if not 0 <= int(value) <= MAX_COUNTER:
            raise ValueError(f"{name}={int(value)} is outside 0..2^53")


def resume_point(directory: str | os.PathLike, device: str, shape: Shape) -> tuple[Path, dict] | None:
    """The checkpoint a run resumes from and its state: the first in survey() order that
    load_for_resume takes.  Each one passed over gets a warning line naming it and why.  None when
    there is no rolling checkpoint; Unresumable when there are some and none can be resumed (the
    newest's line when it is the only one), or when one's network is not the configured one."""
    found = survey(directory)
    refused: list[Unresumable] = []
    for f in found:
        try:   # read again in full even when the survey could not: the full read says best why
            return f.path, load_for_resume(f.path, device, shape)
        except Unresumable as exc:
            if not exc.fallback:
                raise
            refused.append(exc)
            if len(found) > 1:
                log.warning("checkpoint %s passed over: it %s", f.path, exc.problem)
    if not refused:
        return None
    if len(refused) == 1:
        raise refused[0]
    raise Unresumable(directory, f"holds {len(refused)} rolling checkpoints and none can be resumed "
                                 "(the lines above say why)")


class NoRollbackPoint(LookupError):
    """No checkpoint to roll back to; str() says why, for the operator."""


def rollback_point(directory: str | os.PathLike, run_id: str, step: int | None, device: str,
                   shape: Shape) -> tuple[Path, dict]:
    """The checkpoint a rollback of run `run_id` restores, and its state: the one at `step`, healthy
    or not; with step None the newest healthy one that load_for_resume takes (one that cannot be
    read is passed over with a warning line, for the one before).  NoRollbackPoint otherwise."""
    run = name_part(run_id)
    own = [f for f in survey(directory) if f.run == run]
    if step is not None:
        at = [f for f in own if f.step == step]
        if not at:
            steps = ", ".join(str(f.step) for f in sorted(own, key=lambda f: f.step)) or "none"
            raise NoRollbackPoint(f"no checkpoint of run {run_id} at step {step} in {directory} "
                                  f"(its checkpoints: steps {steps})")
        try:
            return at[0].path, load_for_resume(at[0].path, device, shape)
        except Unresumable as exc:
            raise NoRollbackPoint(f"the checkpoint of step {step} cannot be restored: {exc.path} {exc.problem}") \
                from None
    healthy = sorted((f for f in own if f.healthy), key=lambda f: f.step, reverse=True)
    for f in healthy:
        try:
            return f.path, load_for_resume(f.path, device, shape)
        except Unresumable as exc:
            log.warning("healthy checkpoint %s passed over for the rollback: it %s", f.path, exc.problem)
    raise NoRollbackPoint(f"no healthy checkpoint of run {run_id} in {directory}"
                          + (" can be restored" if healthy else f" ({len(own)} checkpoint(s), none marked healthy)"))
