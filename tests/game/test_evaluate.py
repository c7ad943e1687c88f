"""Game tier: the evaluate command on the real ROM: checkpoints, the expert and random on the same
seeded starts, reproducible, foreign checkpoints refused in one line, a recorded video, the
hard-start bank as a second suite, and the expert's lives replayed identically, then cached."""
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


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache folder of this module's own (the bank and the expert's lives)."""
    return tmp_path_factory.mktemp("cache")


def evaluate(rompath, *args, cache_dir=None):
    env = dict(os.environ, TEMPEST_ROMPATH=rompath, PYTHONPATH=str(REPO))
    if cache_dir is not None:
        env["TEMPEST_CACHE_DIR"] = str(cache_dir)
    return subprocess.run([sys.executable, "-m", "services.emulator.evaluate", *map(str, args)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)


def last_json(out):
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_checkpoint_expert_and_random_on_the_same_seeded_starts(rompath, ckpt):
    args = (ckpt, "expert", "random", "--lives", 3, "--max-ticks", 300, "--seed", 5, "--no-cache")
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
    assert table[0].startswith("suite first: start of play (first level), 1 start x 3 lives, capped at 300 ticks")
    assert table[1].split()[:5] == ["policy", "frames", "eps", "lives", "pts/life"] and len(table) == 8
    eps = {line.split()[0]: line.split()[2] for line in table[2:5]}
    own = f"{load_live_settings({}).evaluation_epsilon:.3f}"   # the checkpoint's evaluation epsilon
    assert eps == {str(ckpt): own, "expert": "0.000", "random": "1.000"}, "the table names each epsilon"
    assert table[5].startswith(f"  paired by start, {ckpt} - expert: ")
    for row in one["policies"]:
        assert [life["points"] for life in row["lives_detail"]] == row["scores"]
        assert all(set(life) == {"start", "noops", "points", "ticks", "capped", "level", "start_level"}
                   for life in row["lives_detail"])
        assert row["deaths"] == sum(not life["capped"] for life in row["lives_detail"])
        assert row["ticks"] == sum(life["ticks"] for life in row["lives_detail"])
        lo, hi = row["deaths_per_10k_ticks_ci95"]
        assert lo <= row["deaths_per_10k_ticks"] <= hi
    assert by["random"]["paired"]["against"] == "expert" and "paired" not in by["expert"]
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


def test_the_bank_suite_beside_the_first_level(rompath, ckpt, cache):
    out = evaluate(rompath, ckpt, "random", "--starts", "all", "--bank-levels", "2,3", "--bank-seeds", "0",
                   "--lives", 2, "--bank-lives", 1, "--max-ticks", 200, "--epsilon", 0, cache_dir=cache)
    result = last_json(out)
    assert "start bank: no bank yet; building it" in out.stderr
    bank = result["suites"]["bank"]
    assert [s["name"] for s in bank["starts"]] == ["level-2-seed-0", "level-3-seed-0"]
    assert result["suites"]["first"]["lives_per_start"] == 2 and bank["lives_per_start"] == 1
    for row in bank["policies"]:
        assert [life["start_level"] for life in row["lives_detail"]] == [2, 3]
        assert [life["start"] for life in row["lives_detail"]] == ["level-2-seed-0", "level-3-seed-0"]
    assert result["policies"] == result["suites"]["first"]["policies"]
    assert "; bank level-3-seed-0" in out.stderr
    assert any(line.startswith("suite bank: hard starts") for line in out.stdout.splitlines())
    assert result["suites"]["first"]["policies"][0]["epsilon"] == 0.0


def test_expert_lives_replay_identically_then_come_from_the_cache(rompath, cache):
    args = ("expert", "--lives", 2, "--max-ticks", 250, "--seed", 3)
    fresh = [last_json(evaluate(rompath, *args, "--no-cache", cache_dir=cache)) for _ in range(2)]
    assert fresh[0]["policies"][0]["lives_detail"] == fresh[1]["policies"][0]["lives_detail"], \
        "the expert is deterministic on a start: a rerun gives identical points and ticks"
    filled = evaluate(rompath, *args, cache_dir=cache)
    reused = evaluate(rompath, *args, cache_dir=cache)
    assert "cached" not in filled.stderr and reused.stderr.count("; cached") == 2
    assert last_json(reused)["policies"] == last_json(filled)["policies"] == fresh[0]["policies"]
    longer = evaluate(rompath, "expert", "--lives", 2, "--max-ticks", 260, "--seed", 3, cache_dir=cache)
    assert "cached" not in longer.stderr, "another cap is another life"
