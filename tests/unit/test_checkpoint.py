"""Checkpoints of several runs in one folder, damaged and foreign ones (issue 15, items 4 and 5).

The files are written by a real Learner (checkpoint_dict, save_checkpoint) and resumed with
checkpoint.resume_point and Learner.restore, as services/learner/main.py does; what damages them
is done to the bytes on disk."""
from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from services.learner import checkpoint
from services.learner.learner import Learner
from tempest_common.actions import NUM_ACTIONS

D, HIDDEN = 3, (16,)
SHAPE = (D, HIDDEN, NUM_ACTIONS, False)


def save_at(learner: Learner, *steps: int, healthy: bool = True) -> list:
    """Checkpoints of `learner` at `steps`; healthy=False: each after a non-finite batch, so only
    the newest 3 are kept (healthy ones are kept over hours: the health tests below)."""
    paths = []
    for step in steps:
        if not healthy:
            learner.since_checkpoint.add(SimpleNamespace(applied=False))
        learner.steps = step
        learner.save_checkpoint()
        paths.append(learner_path(learner, step))
    return paths


def learner_path(learner: Learner, step: int):
    return Path(learner.cfg.checkpoint_dir) / f"checkpoint-{learner.run_id}-{step:012d}.pt"


def resume(learner: Learner):
    """What main.py does: the resume point, restored into `learner`; its path."""
    found = checkpoint.resume_point(learner.cfg.checkpoint_dir, "cpu", SHAPE)
    if found is None:
        return None
    path, saved = found
    learner.restore(saved)
    return path


def warnings(caplog) -> list:
    return [r for r in caplog.records if r.name == "learner.checkpoint"]


def rolling(directory) -> list[str]:
    return sorted(p.name for p in directory.glob("checkpoint-*.pt"))


def test_a_new_run_in_a_reused_folder_keeps_its_checkpoint_and_is_the_one_resumed(learners, tmp_path):
    old = learners()
    save_at(old, 5_000, 6_000, 7_000, 8_000, healthy=False)   # the old run got far
    assert rolling(tmp_path / "ckpt") == [f"checkpoint-{old.run_id}-{s:012d}.pt" for s in (6_000, 7_000, 8_000)]
    new = learners()
    assert new.run_id != old.run_id
    save_at(new, 10, healthy=False)                   # sorts below every old name: deleted at once before
    assert learner_path(new, 10).exists(), "the new run's only checkpoint survives retention"
    save_at(new, 20, 30, 40, healthy=False)
    assert rolling(tmp_path / "ckpt") == sorted(
        [f"checkpoint-{old.run_id}-{s:012d}.pt" for s in (6_000, 7_000, 8_000)] +
        [f"checkpoint-{new.run_id}-{s:012d}.pt" for s in (20, 30, 40)]), "each run keeps its own newest 3"
    assert checkpoint.latest(tmp_path / "ckpt") == learner_path(new, 40)
    again = learners()
    assert resume(again) == learner_path(new, 40)     # the most recent run, not the highest step
    assert again.run_id == new.run_id and again.steps == 40
    save_at(again, 50, healthy=False)                 # the resumed run goes on under its id
    assert not learner_path(new, 20).exists() and learner_path(old, 6_000).exists()


def test_a_truncated_newest_checkpoint_is_passed_over_for_the_previous_one(learners, tmp_path, caplog):
    run = learners()
    save_at(run, 100, 200, 300)
    newest = learner_path(run, 300)
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])        # a disk that lost its tail
    again = learners()
    with caplog.at_level(logging.WARNING, logger="learner.checkpoint"):
        assert resume(again) == learner_path(run, 200)
    assert again.steps == 200 and again.run_id == run.run_id
    (line,) = [r.getMessage() for r in warnings(caplog)]   # the reason's words are torch's own
    assert line.startswith(f"checkpoint {newest} passed over: it cannot be read as a learner checkpoint (")


def test_a_garbage_newest_file_is_passed_over_and_one_alone_is_refused(learners, tmp_path, caplog):
    run = learners()
    save_at(run, 100)
    garbage = learner_path(run, 200)
    garbage.write_bytes(b"\x00garbage" * 100)
    with caplog.at_level(logging.WARNING, logger="learner.checkpoint"):
        assert resume(learners()) == learner_path(run, 100)
    assert [r.getMessage() for r in warnings(caplog)] == [
        f"checkpoint {garbage} passed over: it cannot be read as a learner checkpoint "
        "(not a torch file of tensors and plain values)"]
    learner_path(run, 100).unlink()
    with pytest.raises(checkpoint.Unresumable) as refused:
        resume(learners())
    assert str(refused.value) == (f"{garbage} cannot be read as a learner checkpoint (not a torch file of tensors "
                                  "and plain values): start a new run with RESUME=0 or another CHECKPOINT_DIR")


def test_none_resumable_among_several_is_one_line_after_one_line_each(learners, tmp_path, caplog):
    run = learners()
    for path in save_at(run, 1, 2):
        path.write_bytes(b"junk")
    with caplog.at_level(logging.WARNING, logger="learner.checkpoint"), pytest.raises(checkpoint.Unresumable) as e:
        resume(learners())
    assert len(warnings(caplog)) == 2
    assert str(e.value) == (f"{tmp_path / 'ckpt'} holds 2 rolling checkpoints and none can be resumed (the lines "
                            "above say why): start a new run with RESUME=0 or another CHECKPOINT_DIR")


def test_a_checkpoint_of_a_newer_format_is_refused_and_the_previous_one_resumed(learners, tmp_path, caplog):
    run = learners()
    save_at(run, 100, 200)
    newer = learner_path(run, 200)
    state = torch.load(newer, weights_only=True)
    assert state["format_version"] == checkpoint.FORMAT_VERSION == 2 and state["run_id"] == run.run_id
    torch.save({**state, "format_version": 3}, newer)   # what a newer learner would leave
    with pytest.raises(checkpoint.Unresumable, match=r"was written by a newer learner \(checkpoint format 3; "
                                                     r"this learner reads formats 1 to 2\)"):
        checkpoint.load_for_resume(newer, "cpu", SHAPE)
    with caplog.at_level(logging.WARNING, logger="learner.checkpoint"):
        assert resume(learners()) == learner_path(run, 100)
    assert len(warnings(caplog)) == 1 and str(newer) in warnings(caplog)[0].getMessage()


def test_impossible_counters_in_the_newest_fall_back_to_the_previous_one(learners, tmp_path, caplog):
    run = learners()
    save_at(run, 100)
    run.books.global_frames = 2**64 + 5                 # the forged heartbeat's legacy
    save_at(run, 200)
    with caplog.at_level(logging.WARNING, logger="learner.checkpoint"):
        again = learners()
        assert resume(again) == learner_path(run, 100)
    assert again.books.global_frames == 0
    assert "holds impossible counters (global_frames=" in warnings(caplog)[0].getMessage()


def test_a_checkpoint_of_format_1_still_resumes_and_keeps_its_run_id(learners, tmp_path):
    """Files written before format versions: no format_version field, named checkpoint-<step>.pt."""
    run = learners()
    save_at(run, 700)
    state = torch.load(learner_path(run, 700), weights_only=True)
    del state["format_version"]
    learner_path(run, 700).unlink()
    legacy = tmp_path / "ckpt" / "checkpoint-000000000700.pt"
    torch.save(state, legacy)                            # as the old _write left it
    again = learners()
    assert resume(again) == legacy and again.run_id == run.run_id and again.steps == 700
    save_at(again, 800)                                  # goes on under the new naming; the old file is left
    assert rolling(tmp_path / "ckpt") == ["checkpoint-000000000700.pt", f"checkpoint-{run.run_id}-000000000800.pt"]
    assert resume(learners()) == learner_path(run, 800)


def test_marks_and_other_runs_files_are_never_deleted(learners, tmp_path):
    run = learners()
    run.save_mark(250_000)
    other = learners()
    save_at(other, *range(1, 8), healthy=False)
    save_at(run, *range(1, 8), healthy=False)
    assert (tmp_path / "ckpt" / "mark-000000250000.pt").exists()
    assert len(rolling(tmp_path / "ckpt")) == 6
    assert not [p for p in (tmp_path / "ckpt").iterdir() if p.suffix == ".tmp"]


def test_a_second_run_in_the_folder_keeps_the_first_runs_marks(learners, tmp_path, caplog):
    first, second = learners(RUN_ID="first"), learners(RUN_ID="second")
    first.steps, second.steps = 10, 20
    first.save_mark(250_000)
    with caplog.at_level(logging.WARNING, logger="learner.checkpoint"):
        second.save_mark(250_000)
    ckpt = tmp_path / "ckpt"
    assert sorted(p.name for p in ckpt.glob("mark-*.pt")) == ["mark-000000250000-second.pt", "mark-000000250000.pt"]
    assert checkpoint.load(ckpt / "mark-000000250000.pt")["counters"]["steps"] == 10
    assert checkpoint.load(ckpt / "mark-000000250000-second.pt")["counters"]["steps"] == 20
    assert "mark-000000250000.pt belongs to another run" in caplog.text
    first.steps = 11
    first.save_mark(250_000)                             # its own mark: rewritten in place
    assert checkpoint.load(ckpt / "mark-000000250000.pt")["counters"]["steps"] == 11
    (ckpt / "mark-000000500000.pt").write_bytes(b"garbage")   # unreadable: not this run's, kept
    second.save_mark(500_000)
    assert (ckpt / "mark-000000500000.pt").read_bytes() == b"garbage"
    assert checkpoint.load(ckpt / "mark-000000500000-second.pt")["counters"]["steps"] == 20


def test_a_run_id_with_odd_characters_is_made_safe_for_a_file_name(learners, tmp_path):
    run = learners(RUN_ID="../a b")
    save_at(run, 1)
    assert rolling(tmp_path / "ckpt") == ["checkpoint-.._a_b-000000000001.pt"]
    assert torch.load(tmp_path / "ckpt" / "checkpoint-.._a_b-000000000001.pt", weights_only=True)["run_id"] == "../a b"
    assert os.listdir(tmp_path) == ["ckpt"]


# -- health marks and their retention (issue 16) ----------------------------------------------------
MIN = 60.0


def health_mark(healthy: bool | None) -> dict:
    """A stand-in checkpoint with a verdict (None: written before health marks)."""
    state = {"run_id": "r1"}
    if healthy is not None:
        state["health"] = {"healthy": healthy, "reasons": [] if healthy else ["loss not finite (nan)"],
                           "wall_time": 0.0, "step": 0, "global_frames": 0}
    return state


def save_every_5_minutes(directory, marks: list, start: float = 1_700_000_000.0) -> dict[int, float]:
    """checkpoint.save of marks[k] at start + 5k minutes, step 100k; {step: when}."""
    when = {}
    for k, healthy in enumerate(marks):
        when[100 * k] = start + 5 * MIN * k
        checkpoint.save(directory, health_mark(healthy), 100 * k, now=when[100 * k])
    return when


def kept(directory) -> list[tuple[int, bool]]:
    """(step, healthy) of the rolling checkpoints left, by step."""
    out = []
    for path in directory.glob("checkpoint-*.pt"):
        out.append((int(path.stem.rsplit("-", 1)[1]), checkpoint.is_healthy(torch.load(path, weights_only=True))))
    return sorted(out)


def test_a_healthy_run_keeps_healthy_checkpoints_spread_over_two_hours(tmp_path):
    when = save_every_5_minutes(tmp_path, [True] * 37)             # 3 hours
    now = max(when.values())
    steps = [s for s, _ in kept(tmp_path)]
    assert steps[-3:] == [3400, 3500, 3600], "the newest 3 as before"
    ages = {s: now - when[s] for s in steps}
    older = sorted(ages[s] for s in steps[:-3])
    assert all(b - a >= checkpoint.HEALTHY_SPACING_S for a, b in zip(older, older[1:])), "spread, not every one"
    assert max(ages.values()) <= checkpoint.HEALTHY_HISTORY_S, "nothing beyond the history: a newer one is old enough"
    assert any(age >= checkpoint.OLDEST_HEALTHY_AGE_S for age in ages.values())
    assert max(ages.values()) >= checkpoint.HEALTHY_HISTORY_S - checkpoint.HEALTHY_SPACING_S, "the whole 2 hours"
    assert len(steps) <= 3 + checkpoint.HEALTHY_HISTORY_S // checkpoint.HEALTHY_SPACING_S + 1


def test_the_last_healthy_checkpoint_survives_any_length_of_divergence(tmp_path):
    save_every_5_minutes(tmp_path, [True] * 12 + [False] * 40)      # healthy for an hour, then 3 h 20 m not
    assert kept(tmp_path) == [(1100, True), (4900, False), (5000, False), (5100, False)]


def test_a_recent_divergence_leaves_a_healthy_one_older_than_the_slowest_alert(tmp_path):
    when = save_every_5_minutes(tmp_path, [True] * 36 + [False] * 6)   # 3 h healthy, then 30 minutes not
    now = max(when.values())
    left = kept(tmp_path)
    healthy_ages = [now - when[s] for s, healthy in left if healthy]
    assert min(healthy_ages) == 30 * MIN, "the newest healthy: where a rollback goes"
    assert any(checkpoint.OLDEST_HEALTHY_AGE_S <= age <= checkpoint.HEALTHY_HISTORY_S for age in healthy_ages), \
        "a healthy one from before the slowest alert's window (1 h + 2 m)"
    assert [healthy for _, healthy in left[-3:]] == [False] * 3


def test_checkpoints_without_a_health_mark_are_rolled_as_before(tmp_path):
    save_every_5_minutes(tmp_path, [None] * 30)
    assert kept(tmp_path) == [(2700, False), (2800, False), (2900, False)], "unknown health is not healthy"


def test_to_keep_on_made_up_files():
    """The rule alone: newest 3; newest healthy; newest healthy 65+ minutes old; healthy ones in the
    last 2 h, from the oldest on, each 10+ minutes after the previous one kept."""
    now = 100_000.0
    files = [checkpoint.Saved(Path(f"c{step}"), step, now - age * MIN, healthy) for step, age, healthy in (
        (1, 300, True), (2, 200, True), (3, 100, True), (4, 70, True), (5, 66, True), (6, 50, True),
        (7, 45, True), (8, 20, False), (9, 10, False), (10, 5, False), (11, 1, False))]
    assert sorted(str(p) for p in checkpoint.to_keep(files, now)) == sorted(
        ["c9", "c10", "c11",          # the newest 3
         "c7",                        # the newest healthy
         "c5",                        # the newest healthy at least 65 minutes old
         "c3", "c4", "c6"])           # 100, 70 and 50 minutes old (c5 and c7 are < 10 minutes after c4, c6)
    # c1, c2: healthy, older than the history, and a newer one is old enough: gone


def test_each_checkpoint_carries_the_learners_verdict(learners, tmp_path):
    run = learners()
    run.books.global_frames = 1234
    (first,) = save_at(run, 10)
    health = torch.load(first, weights_only=True)["health"]
    assert health["healthy"] is True and health["reasons"] == [] and health["step"] == 10
    assert health["global_frames"] == 1234 and abs(health["wall_time"] - time.time()) < 60
    run.since_checkpoint.add(SimpleNamespace(applied=False))      # a batch skipped: non-finite
    (second,) = save_at(run, 20)
    health = torch.load(second, weights_only=True)["health"]
    assert health["healthy"] is False and health["reasons"] == ["1 non-finite batch(es) skipped"]
    (third,) = save_at(run, 30)                                     # no step since: the same network
    assert torch.load(third, weights_only=True)["health"]["healthy"] is False
    again = learners()
    resume(again)
    assert again.health.healthy is False, "a resumed network keeps its checkpoint's verdict"


def test_rollback_point_names_what_is_missing(learners, tmp_path):
    run = learners()
    with pytest.raises(checkpoint.NoRollbackPoint, match="no healthy checkpoint of run .* \\(0 checkpoint"):
        checkpoint.rollback_point(tmp_path / "ckpt", run.run_id, None, "cpu", SHAPE)
    run.since_checkpoint.add(SimpleNamespace(applied=False))
    save_at(run, 100, 200)
    with pytest.raises(checkpoint.NoRollbackPoint, match=r"\(2 checkpoint\(s\), none marked healthy\)"):
        checkpoint.rollback_point(tmp_path / "ckpt", run.run_id, None, "cpu", SHAPE)
    with pytest.raises(checkpoint.NoRollbackPoint, match=f"no checkpoint of run {run.run_id} at step 150 in .* "
                                                         r"\(its checkpoints: steps 100, 200\)"):
        checkpoint.rollback_point(tmp_path / "ckpt", run.run_id, 150, "cpu", SHAPE)
    path, saved = checkpoint.rollback_point(tmp_path / "ckpt", run.run_id, 100, "cpu", SHAPE)
    assert path == learner_path(run, 100) and saved["counters"]["steps"] == 100, "a step's checkpoint, healthy or not"


def test_a_rollback_restores_the_newest_healthy_networks_and_keeps_the_counters(learners, tmp_path):
    run = learners()
    save_at(run, 100)                                               # healthy (a new network)
    healthy_weights = {k: v.clone() for k, v in run.online.state_dict().items()}
    healthy_target = {k: v.clone() for k, v in run.target.state_dict().items()}
    with torch.no_grad():
        for p in (*run.online.parameters(), *run.target.parameters()):
            p.add_(1.0)
    run.optimizer.param_groups[0]["lr"] = 0.5
    run.since_checkpoint.add(SimpleNamespace(applied=False))
    save_at(run, 200)                                               # not healthy
    run.steps, run.samples, version = 250, 64_000, run.weights_version
    done = run.rollback()
    assert done == {"from_step": 250, "to_step": 100, "checkpoint": learner_path(run, 100).name, "healthy": True,
                    "weights_version": version + 1}
    assert all(torch.equal(v, healthy_weights[k]) for k, v in run.online.state_dict().items())
    assert all(torch.equal(v, healthy_target[k]) for k, v in run.target.state_dict().items())
    assert run.optimizer.param_groups[0]["lr"] == run.live.lr, "the optimizer's state is the checkpoint's"
    assert run.health.healthy and run.since_checkpoint.steps == run.since_checkpoint.nonfinite == 0
    assert (run.steps, run.samples) == (250, 64_000), "counters go on"
    assert run.metrics.rollbacks._value.get() == 1


def test_the_newest_checkpoints_health_and_the_last_healthy_step_are_exported(learners):
    run = learners()
    def value(name: str) -> float:
        return next(s.value for m in (run.metrics.checkpoint_healthy, run.metrics.last_healthy_checkpoint_step)
                    for f in m.collect() for s in f.samples if s.name == name)
    assert math.isnan(value("tempest_learner_checkpoint_healthy"))
    assert math.isnan(value("tempest_learner_last_healthy_checkpoint_step"))
    save_at(run, 100)
    assert value("tempest_learner_checkpoint_healthy") == 1.0
    assert value("tempest_learner_last_healthy_checkpoint_step") == 100
    save_at(run, 200, healthy=False)
    assert value("tempest_learner_checkpoint_healthy") == 0.0
    assert value("tempest_learner_last_healthy_checkpoint_step") == 100   # what a rollback goes back to
