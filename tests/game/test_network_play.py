"""Game tier: a worker switches from random play to the network when weights arrive, and plays
evaluation games from the saved start of play at the published evaluation share."""
from __future__ import annotations

import signal
import time

import numpy as np
import pytest
import torch
import zmq

from tempest_common.actions import NUM_ACTIONS
from tempest_common.messages import EpisodeSummary, WeightsSchedule
from tempest_common.network import DuelingQNetwork
from tempest_common.state_vector import STATE_SIZE
from tempest_common.wire import decode, encode
from tests.conftest import scrape, start_service, stop_process, wait_for
from tests.game.test_worker_game import worker_env

pytestmark = pytest.mark.game


def test_worker_plays_with_published_weights(rompath, tmp_path):
    ctx = zmq.Context.instance()
    pub, learner = ctx.socket(zmq.PUB), ctx.socket(zmq.PULL)
    pub_port = pub.bind_to_random_port("tcp://127.0.0.1")
    learner_port = learner.bind_to_random_port("tcp://127.0.0.1")
    env = worker_env(rompath, tmp_path, WEIGHTS_ADDR=f"tcp://127.0.0.1:{pub_port}",
                     LEARNER_EPISODES_ADDR=f"tcp://127.0.0.1:{learner_port}")
    port = int(env["METRICS_PORT"])
    worker = start_service("services.emulator.main", env, tmp_path / "worker.log")
    torch.manual_seed(0)
    net = DuelingQNetwork(STATE_SIZE, NUM_ACTIONS, (32,))
    weights = {k: v.numpy() for k, v in net.state_dict().items()}
    msg = encode(WeightsSchedule(1, weights, 0.0, 0.0, 1.0, 0.0, 0, time.time(), "test-run:1"))
    episodes = []
    try:
        wait_for(lambda: scrape(port).get("tempest_frames_total", 0) > 300, 60, what="random play")
        before = scrape(port)
        assert before['tempest_emulator_actions_total{actor="network"}'] == 0
        end = time.monotonic() + 60
        while time.monotonic() < end:
            pub.send(msg)
            if learner.poll(300):
                m = decode(learner.recv())
                if isinstance(m, EpisodeSummary):
                    episodes.append(m)
            if any(e.evaluation for e in episodes) and scrape(port)["tempest_evaluation_games_total"] >= 1:
                break
        after = scrape(port)
        worker.send_signal(signal.SIGTERM)
        worker.wait(20)
    finally:
        stop_process(worker)
        pub.close(0)
        learner.close(0)
    assert after["tempest_emulator_weights_version"] == 1
    network = after['tempest_emulator_actions_total{actor="network"}']
    evaluation = after['tempest_emulator_actions_total{actor="evaluation"}']
    random_after = after['tempest_emulator_actions_total{actor="random"}'] - before['tempest_emulator_actions_total{actor="random"}']
    assert network > 0 and network + evaluation > 100, "the network plays once weights arrive"
    # epsilon 0: random play stops once the weights are taken (the worker looks every heartbeat, 0.5 s)
    assert random_after < 250, random_after
    assert after["tempest_evaluation_games_total"] >= 1, "evaluation share 1: the next game is an evaluation game"
    evals = [e for e in episodes if e.evaluation]
    assert evals and set(evals[0].actor_counts) == {"evaluation"}
    assert np.all([not e.evaluation for e in episodes[:1]])
