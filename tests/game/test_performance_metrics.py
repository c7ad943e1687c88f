"""Game tier: the performance figures have data early in a run, and the learner keeps checkpoint
marks.  Real Redis, replay, learner and one worker on real MAME (no expert: the expert ratio is 0
from the start); the first evaluation draw after the weights arrive always starts an evaluation
game, so within a few minutes the learner reports an evaluation game and its lives, and its global
frame count has crossed a few CHECKPOINT_EVERY_FRAMES marks."""
from __future__ import annotations

import re

import pytest

from tests.conftest import free_port, scrape, start_service, stop_process, wait_for
from tests.game.test_worker_game import worker_env

pytestmark = pytest.mark.game
MARK_EVERY = 2000


def test_evaluation_figures_per_game_and_per_life_and_checkpoint_marks(rompath, redis_server, tmp_path):
    p = {k: free_port() for k in ("pull", "router", "rmetrics", "episodes", "weights", "control", "lmetrics")}
    ckpt = tmp_path / "checkpoints"
    procs = []
    try:
        procs.append(start_service("services.replay.main", {
            "REDIS_URL": redis_server, "REPLAY_PULL_BIND": f"tcp://127.0.0.1:{p['pull']}",
            "REPLAY_BIND": f"tcp://127.0.0.1:{p['router']}", "METRICS_PORT": str(p["rmetrics"]),
            "MIN_SIZE_TO_SAMPLE": "200", "REPLAY_CAPACITY": "20000"}, tmp_path / "replay.log"))
        procs.append(start_service("services.learner.main", {
            "REPLAY_ADDR": f"tcp://127.0.0.1:{p['router']}",
            "LEARNER_EPISODES_BIND": f"tcp://127.0.0.1:{p['episodes']}",
            "WEIGHTS_BIND": f"tcp://127.0.0.1:{p['weights']}", "CONTROL_BIND": f"tcp://127.0.0.1:{p['control']}",
            "METRICS_PORT": str(p["lmetrics"]), "DEVICE": "cpu", "HIDDEN": "64,64", "BATCH_SIZE": "32",
            "TRAINING_STEPS_PER_SAMPLE": "1", "PUBLISH_EVERY_STEPS": "5", "EXPERT_RATIO_START": "0",
            "EXPERT_RATIO_MIN": "0", "EVALUATION_SHARE": "0.05", "CHECKPOINT_DIR": str(ckpt),
            "CHECKPOINT_EVERY_FRAMES": str(MARK_EVERY), "RESUME": "0"}, tmp_path / "learner.log"))
        wait_for(lambda: scrape(p["rmetrics"]) and scrape(p["lmetrics"]), 60, what="replay and learner up")
        procs.append(start_service("services.emulator.main", worker_env(
            rompath, tmp_path, REPLAY_ADDR=f"tcp://127.0.0.1:{p['pull']}",
            LEARNER_EPISODES_ADDR=f"tcp://127.0.0.1:{p['episodes']}", WEIGHTS_ADDR=f"tcp://127.0.0.1:{p['weights']}"),
            tmp_path / "worker.log"))

        def figures():
            m = scrape(p["lmetrics"])
            done = m['tempest_dqn_evaluation_games{window="1M"}'] >= 1 and any(ckpt.glob("mark-*.pt"))
            return m if done else None
        m = wait_for(figures, 170, interval=1, what="an evaluation game reported and a checkpoint mark written")
    finally:
        for proc in reversed(procs):
            stop_process(proc)
    for w in ("1M", "5M"):
        assert m[f'tempest_dqn_evaluation_games{{window="{w}"}}'] >= 1
        assert m[f'tempest_dqn_evaluation_lives{{window="{w}"}}'] >= m[f'tempest_dqn_evaluation_games{{window="{w}"}}']
        assert m[f'tempest_dqn_reward_mean{{window="{w}"}}'] >= 0
        assert m[f'tempest_dqn_life_reward_mean{{window="{w}"}}'] >= 0
    marks = sorted(f.name for f in ckpt.glob("mark-*.pt"))
    assert marks, f"no checkpoint mark in {sorted(f.name for f in ckpt.iterdir())}"
    for name in marks:
        frames = int(re.fullmatch(r"mark-(\d{12})\.pt", name).group(1))
        assert frames > 0 and frames % MARK_EVERY == 0, name
