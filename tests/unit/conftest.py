"""Fixtures shared by the unit tests of the learner (test_checkpoint, test_probe, test_qbound)."""
from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from services.learner.learner import Learner
from services.learner.metrics import LearnerMetrics
from services.learner.settings import load_learner_config, load_live_settings
from tests.conftest import free_port


@pytest.fixture()
def learners(tmp_path):
    """make(**env) -> a new Learner (a new run: STATE_DIM 3, HIDDEN 16 unless env says otherwise)
    on free ports, writing to tmp_path/ckpt; its sockets closed at the end."""
    made = []

    def make(**env) -> Learner:
        env = {"STATE_DIM": "3", "HIDDEN": "16", "DEVICE": "cpu", "METRICS_PORT": "0",
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
