"""Game tier: evaluating a checkpoint plays whole games on the real ROM and can record one."""
from __future__ import annotations

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


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    import dataclasses
    torch.manual_seed(1)
    net = DuelingQNetwork(STATE_SIZE, NUM_ACTIONS, (32,))
    d = tmp_path_factory.mktemp("ckpt")
    return checkpoint.save(d, {"online": net.state_dict(), "live": dataclasses.asdict(load_live_settings({}))}, 7)


def evaluate(rompath, *args):
    return subprocess.run([sys.executable, "-m", "services.emulator.evaluate", *map(str, args)], cwd=REPO,
                          env=dict(os.environ, TEMPEST_ROMPATH=rompath, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=300)


def test_plays_games_from_the_same_start(rompath, ckpt):
    out = evaluate(rompath, ckpt, "--games", 2, "--epsilon", 0, "--max-ticks", 4000)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["games"] == 2 and len(summary["scores"]) == 2
    assert [line.split(":")[0] for line in lines[:2]] == ["game 1", "game 2"]
    # epsilon 0 and the same saved start: a deterministic network plays the same game twice
    assert summary["scores"][0] == summary["scores"][1]


def test_records_a_video_of_one_game(rompath, ckpt, tmp_path):
    video = tmp_path / "game.mng"
    out = evaluate(rompath, ckpt, "--video", video, "--max-ticks", 300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert video.stat().st_size > 10_000
    assert json.loads(out.stdout.strip().splitlines()[-1])["games"] == 1
