"""Game tier: the evaluate command on the real ROM: checkpoints, the expert and random on the same
seeded starts, reproducible, foreign checkpoints refused in one line, and a recorded video."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from services.learner import checkpoint
from services.learner.settings import load_live_settings
from tempest_common.actions import NUM_ACTIONS
from tempest_common.network import DuelingQNetwork
from tempest_common.state_vector import STATE_SIZE
from tests.conftest import REPO

pytestmark = pytest.mark.game


def write_checkpoint(directory, state_dim=STATE_SIZE, frames=12345):
    torch.manual_seed(1)
    net = DuelingQNetwork(state_dim, NUM_ACTIONS, (32,))
    return checkpoint.save(directory, {"online": net.state_dict(), "bookkeeper": {"global_frames": frames},
                                       "live": dataclasses.asdict(load_live_settings({}))}, 7)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt"))


def evaluate(rompath, *args):
    return subprocess.run([sys.executable, "-m", "services.emulator.evaluate", *map(str, args)], cwd=REPO,
                          env=dict(os.environ, TEMPEST_ROMPATH=rompath, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=600)


def test_checkpoint_expert_and_random_on_the_same_seeded_starts(rompath, ckpt):
    args = (ckpt, "expert", "random", "--lives", 3, "--max-ticks", 300, "--seed", 5)
    first, again = evaluate(rompath, *args, "--jobs", 2), evaluate(rompath, *args)
    assert first.returncode == 0 and again.returncode == 0, first.stderr[-2000:] + again.stderr[-2000:]
    one, two = json.loads(first.stdout.strip().splitlines()[-1]), json.loads(again.stdout.strip().splitlines()[-1])
    assert [p["policy"] for p in one["policies"]] == [str(ckpt), "expert", "random"]
    assert one["noop_starts"] == two["noop_starts"] and len(one["noop_starts"]) == 3
    # same seed, same starts: every life plays out the same, on 2 MAMEs or on 1
    assert [p["scores"] for p in one["policies"]] == [p["scores"] for p in two["policies"]]
    by = {p["policy"]: p for p in one["policies"]}
    assert by[str(ckpt)]["frames"] == 12345 and by["expert"]["frames"] is None
    assert all(len(p["scores"]) == 3 and p["ci95"] >= 0 for p in one["policies"])
    assert by["expert"]["capped"] == 3, "the expert survives 300 ticks from the start of play"
    table = first.stdout.splitlines()
    assert table[0].split()[:4] == ["policy", "frames", "lives", "mean"] and len(table) == 5
    other = evaluate(rompath, "random", "--lives", 3, "--max-ticks", 300, "--seed", 6)
    assert json.loads(other.stdout.strip().splitlines()[-1])["noop_starts"] != one["noop_starts"]


def test_a_checkpoint_of_another_network_is_refused_in_one_line(rompath, tmp_path):
    foreign = write_checkpoint(tmp_path, state_dim=STATE_SIZE - 10)
    out = evaluate(rompath, foreign, "random", "--lives", 1)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert "another version" in out.stderr and "RESUME=0" in out.stderr
    missing = evaluate(rompath, tmp_path / "nope.pt")
    assert missing.returncode == 2 and "no such checkpoint" in missing.stderr


def test_records_a_video_of_one_life(rompath, ckpt, tmp_path):
    video = tmp_path / "life.mng"
    out = evaluate(rompath, ckpt, "--video", video, "--max-ticks", 300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert video.stat().st_size > 10_000
    assert json.loads(out.stdout.strip().splitlines()[-1])["lives"] == 1
