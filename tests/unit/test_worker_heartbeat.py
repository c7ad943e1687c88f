"""The worker's heartbeat carries its reward settings (schema 3, issue 16): the ones its episode
tracker makes the rows' rewards with, so the learner can bound Q.  A real EmulatorWorker (no MAME)
and a real ZeroMQ PULL standing in for the learner's inbox."""
import time

import zmq
from prometheus_client import CollectorRegistry

from services.emulator.config import load_emulator_config
from services.emulator.metrics import WorkerMetrics
from services.emulator.worker import EmulatorWorker
from tempest_common.messages import Heartbeat
from tempest_common.wire import decode
from tests.conftest import free_port


def test_the_heartbeat_reports_the_reward_settings_the_rows_are_made_with():
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    addr = f"tcp://127.0.0.1:{free_port()}"
    pull.bind(addr)
    cfg = load_emulator_config({"WORKER_ID": "w9", "REPLAY_ADDR": "", "LEARNER_EPISODES_ADDR": addr,
                                "WEIGHTS_ADDR": "", "EXPERT_ADDR": "", "METRICS_PORT": "0",
                                "REWARD_SCALE": "0.02", "REWARD_CLIP": "3", "DEATH_PENALTY": "7.5",
                                "SURVIVAL_BONUS": "-0.125"})
    w = EmulatorWorker(cfg, WorkerMetrics(CollectorRegistry()))
    try:
        w._update_rates(time.monotonic())   # what the game loop does every HEARTBEAT_S
        pull.setsockopt(zmq.RCVTIMEO, 10_000)
        hb = decode(pull.recv(), expect=Heartbeat)
    finally:
        w.peers.close()
        w.network.close()
        pull.close(0)
        ctx.term()
    assert hb.worker_id == "w9" and hb.rewards_known
    assert (hb.reward_scale, hb.reward_clip, hb.death_penalty, hb.survival_bonus) == (0.02, 3.0, 7.5, -0.125)
    r = w.tracker.reward   # the same settings as the rewards' own
    assert (r.scale, r.clip, r.death_penalty, r.survival_bonus) == (0.02, 3.0, 7.5, -0.125)
