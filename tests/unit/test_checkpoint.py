"""Checkpoints of several runs in one folder, damaged and foreign ones (issue 15, items 4 and 5).

The files are written by a real Learner (checkpoint_dict, save_checkpoint) and resumed with
checkpoint.resume_point and Learner.restore, as services/learner/main.py does; what damages them
is done to the bytes on disk."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch
from prometheus_client import CollectorRegistry

from services.learner import checkpoint
from services.learner.learner import Learner
from services.learner.metrics import LearnerMetrics
from services.learner.settings import load_learner_config, load_live_settings
from tempest_common.actions import NUM_ACTIONS
from tests.conftest import free_port

D, HIDDEN = 3, (16,)
SHAPE = (D, HIDDEN, NUM_ACTIONS, False)


@pytest.fixture()
def learners(tmp_path):
    """make() -> a new Learner (a new run) writing to tmp_path/ckpt; its sockets closed at the end."""
    made = []

    def make(**env) -> Learner:
        env = {"STATE_DIM": str(D), "HIDDEN": ",".join(map(str, HIDDEN)), "DEVICE": "cpu", "METRICS_PORT": "0",
               "REPLAY_ADDR": f"tcp://127.0.0.1:{free_port()}", "CHECKPOINT_DIR": str(tmp_path / "ckpt"),
               **{k: f"tcp://127.0.0.1:{free_port()}" for k in ("LEARNER_EPISODES_BIND", "WEIGHTS_BIND",
                                                               "CONTROL_BIND")}, **env}
        learner = Learner(load_learner_config(env), load_live_settings(env), LearnerMetrics(CollectorRegistry()))
        made.append(learner)
        return learner
    yield make
    for learner in made:
        for sock in (learner.inbox, learner.pub):
            sock.close(0)
        learner.control.close()
        learner.replay.close()


def save_at(learner: Learner, *steps: int) -> list:
    paths = []
    for step in steps:
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
    save_at(old, 5_000, 6_000, 7_000, 8_000)        # the old run got far
    assert rolling(tmp_path / "ckpt") == [f"checkpoint-{old.run_id}-{s:012d}.pt" for s in (6_000, 7_000, 8_000)]
    new = learners()
    assert new.run_id != old.run_id
    save_at(new, 10)                                  # sorts below every old name: deleted at once before
    assert learner_path(new, 10).exists(), "the new run's only checkpoint survives retention"
    save_at(new, 20, 30, 40)
    assert rolling(tmp_path / "ckpt") == sorted(
        [f"checkpoint-{old.run_id}-{s:012d}.pt" for s in (6_000, 7_000, 8_000)] +
        [f"checkpoint-{new.run_id}-{s:012d}.pt" for s in (20, 30, 40)]), "each run keeps its own newest 3"
    assert checkpoint.latest(tmp_path / "ckpt") == learner_path(new, 40)
    again = learners()
    assert resume(again) == learner_path(new, 40)     # the most recent run, not the highest step
    assert again.run_id == new.run_id and again.steps == 40
    save_at(again, 50)                                # the resumed run goes on under its id
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
    save_at(other, *range(1, 8))
    save_at(run, *range(1, 8))
    assert (tmp_path / "ckpt" / "mark-000000250000.pt").exists()
    assert len(rolling(tmp_path / "ckpt")) == 6
    assert not [p for p in (tmp_path / "ckpt").iterdir() if p.suffix == ".tmp"]


def test_a_run_id_with_odd_characters_is_made_safe_for_a_file_name(learners, tmp_path):
    run = learners(RUN_ID="../a b")
    save_at(run, 1)
    assert rolling(tmp_path / "ckpt") == ["checkpoint-.._a_b-000000000001.pt"]
    assert torch.load(tmp_path / "ckpt" / "checkpoint-.._a_b-000000000001.pt", weights_only=True)["run_id"] == "../a b"
    assert os.listdir(tmp_path) == ["ckpt"]
