"""Game tier: the expert service plays the real game through the worker and scores points."""
from __future__ import annotations

import signal
import time

import pytest
import zmq

from tempest_common.messages import EpisodeSummary
from tempest_common.wire import decode
from tests.conftest import free_port, scrape, start_service, stop_process, wait_for
from tests.game.test_worker_game import worker_env

pytestmark = pytest.mark.game


def test_expert_drives_the_worker_and_scores(rompath, tmp_path):
    expert_port, expert_metrics = free_port(), free_port()
    expert = start_service("services.expert.main", {"EXPERT_BIND": f"tcp://127.0.0.1:{expert_port}",
                                                    "METRICS_PORT": str(expert_metrics)}, tmp_path / "expert.log")
    learner = zmq.Context.instance().socket(zmq.PULL)
    learner_port = learner.bind_to_random_port("tcp://127.0.0.1")
    env = worker_env(rompath, tmp_path, EXPERT_ADDR=f"tcp://127.0.0.1:{expert_port}", EXPERT_RATIO=1,
                     LEARNER_EPISODES_ADDR=f"tcp://127.0.0.1:{learner_port}", EXPERT_TIMEOUT_MS=200)
    worker = start_service("services.emulator.main", env, tmp_path / "worker.log")
    episodes = []
    try:
        wait_for(lambda: scrape(expert_metrics), 30, what="expert up")
        def drain(seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                if learner.poll(200):
                    msg = decode(learner.recv())
                    if isinstance(msg, EpisodeSummary):
                        episodes.append(msg)
        drain(40)
        metrics = scrape(int(env["METRICS_PORT"]))
        worker.send_signal(signal.SIGTERM)  # truncates the life in progress: its summary follows
        worker.wait(20)
        drain(1)
    finally:
        stop_process(worker)
        stop_process(expert)
        learner.close(0)
    expert_ticks = metrics['tempest_emulator_actions_total{actor="expert"}']
    random_ticks = metrics['tempest_emulator_actions_total{actor="random"}']
    assert expert_ticks > 2000 and random_ticks < 0.02 * expert_ticks, (expert_ticks, random_ticks)
    points = sum(e.score for e in episodes)
    assert episodes, "at least the truncated life in progress is summarised"
    assert points >= 1000, f"the expert scored only {points} points in 40 s"
    assert all(set(e.actor_counts) <= {"expert", "random"} for e in episodes)
