"""Integration: a real learner (in-process, its own loop in a thread, real ZeroMQ sockets) fed
hostile input: poisoned sample rows from a stand-in replay, a forged heartbeat counter, an
oversized message on its inbox, control "set" without the token, a checkpoint of impossible books.
Each is refused and counted, and the learner carries on."""
from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest
import torch
import zmq
from prometheus_client import CollectorRegistry

from services.learner import checkpoint
from services.learner import main as learner_main
from services.learner.control import ControlClient, ControlError, read_control_token
from services.learner.learner import PRIORITY_EPS, Learner
from services.learner.metrics import LearnerMetrics
from services.learner.settings import load_learner_config, load_live_settings
from tempest_common.actions import NUM_ACTIONS
from tempest_common.messages import (Ack, EpisodeSummary, Heartbeat, PriorityUpdate, SampleReply, SampleRequest,
                                     WeightsSchedule)
from tempest_common.network import DuelingQNetwork
from tempest_common.socket_limits import SMALL_MESSAGE_BYTES
from tempest_common.wire import decode, encode
from tests.conftest import free_port, wait_for

pytestmark = pytest.mark.integration
D = 5
POISON_ACTION = 30000   # the index of the crash this guards against


class StandInReplay:
    """A replay ROUTER that answers at most `budget` sample requests (so the learner trains a few
    steps, then idles) with rows from `make_rows(batch_size)`, and records priority updates."""

    def __init__(self, make_rows):
        self.url = f"tcp://127.0.0.1:{free_port()}"
        self.make_rows, self.budget, self.priorities = make_rows, 0, []
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._waiting: list[tuple[list[bytes], SampleRequest]] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def allow(self, n: int) -> None:
        with self._lock:
            self.budget += n

    def _serve(self) -> None:
        router = zmq.Context.instance().socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.bind(self.url)
        while not self._stop.is_set():
            if router.poll(20):
                *env, payload = router.recv_multipart()
                msg = decode(payload, expect=(SampleRequest, PriorityUpdate))
                if isinstance(msg, PriorityUpdate):
                    self.priorities.append(dict(zip(msg.index.tolist(), msg.priority.tolist())))
                    router.send_multipart([*env, encode(Ack(msg.request_id, None))])
                else:
                    self._waiting.append((env, msg))
            with self._lock:
                while self._waiting and self.budget > 0:
                    env, req = self._waiting.pop(0)
                    self.budget -= 1
                    router.send_multipart([*env, encode(self.make_rows(req))])
        router.close(0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def rows(req: SampleRequest, poison: bool = True, all_bad: bool = False) -> SampleReply:
    """Chain-like rows with slot numbers 0..b-1; when poisoned, slot 1 has action 30000 and slot 2 a
    NaN state (all_bad: every row has a NaN reward)."""
    b = req.batch_size
    rng = np.random.default_rng(req.request_id)
    state, next_state = (np.eye(D, dtype=np.float32)[rng.integers(0, D, b)] for _ in range(2))
    action = rng.integers(0, NUM_ACTIONS, b).astype(np.int16)
    reward = np.zeros(b, np.float32)
    if poison:
        action[1] = POISON_ACTION
        state[2, 0] = np.nan
    if all_bad:
        reward[:] = np.nan
    return SampleReply(req.request_id, None, np.arange(b, dtype=np.uint64), state, action, reward,
                       np.full(b, 0.9, np.float32), next_state, np.ones(b, np.float32),
                       np.zeros(b, np.uint8), action.copy())   # expert rows: labelled with their action


def learner_env(tmp_path, replay_url: str) -> dict:
    ports = {k: free_port() for k in ("e", "w", "c")}
    return {"STATE_DIM": str(D), "HIDDEN": "16", "DEVICE": "cpu", "METRICS_PORT": "0", "SEED": "0",
            "LEARNER_EPISODES_BIND": f"tcp://127.0.0.1:{ports['e']}", "WEIGHTS_BIND": f"tcp://127.0.0.1:{ports['w']}",
            "CONTROL_BIND": f"tcp://127.0.0.1:{ports['c']}", "REPLAY_ADDR": replay_url,
            "CHECKPOINT_DIR": str(tmp_path / "ckpt"), "BATCH_SIZE": "8", "TRAINING_STEPS_PER_SAMPLE": "0",
            "PUBLISH_EVERY_STEPS": "1", "EXPERT_RATIO_START": "0.9", "EXPERT_RATIO_MIN": "0.1",
            "EXPERT_RATIO_DECAY": "0.5", "EXPERT_RATIO_DECAY_FRAMES": "10000"}


class Running:
    """A Learner running its loop in a thread, with its own metrics registry."""

    def __init__(self, env: dict):
        self.env = env
        self.registry = CollectorRegistry()
        self.learner = Learner(load_learner_config(env), load_live_settings(env), LearnerMetrics(self.registry))
        self.thread = threading.Thread(target=self.learner.run, daemon=True)

    def addr(self, key: str) -> str:
        return self.env[key]

    def value(self, name: str, **labels) -> float:
        return self.registry.get_sample_value(name, labels or None) or 0.0

    def start(self) -> Running:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.learner.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()


@pytest.fixture()
def running(tmp_path):
    made = []

    def start(make_rows=rows):
        replay = StandInReplay(make_rows)
        r = Running(learner_env(tmp_path, replay.url))
        r.replay = replay
        made.append(r)
        return r.start()
    yield start
    for r in made:
        if r.thread.is_alive():
            r.stop()
        r.replay.close()


def subscriber(addr: str) -> zmq.Socket:
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(addr)
    return sub


def latest(sub: zmq.Socket, min_version: int, timeout: float = 20.0) -> WeightsSchedule:
    deadline, msg = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if sub.poll(200):
            msg = decode(sub.recv(), expect=WeightsSchedule)
            if msg.version >= min_version and not sub.poll(50):
                return msg
    raise AssertionError(f"no weights version >= {min_version} (last: {msg and msg.version})")


def pusher(addr: str) -> zmq.Socket:
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    push.connect(addr)
    return push


def test_poisoned_rows_are_dropped_sent_back_at_the_floor_and_training_goes_on(running):
    r = running()
    r.replay.allow(5)
    wait_for(lambda: r.value("tempest_learner_steps_total") == 5, 30, what="5 steps on poisoned samples")
    # every reply had one row with action 30000 and one with a NaN state: each went back at the
    # floor priority at once, and the 6 good rows of each were trained on
    assert r.value("tempest_learner_rejected_rows_total", reason="action_out_of_range") == 5
    assert r.value("tempest_learner_rejected_rows_total", reason="nonfinite") == 5
    assert r.value("tempest_learner_samples_total") == 5 * 6
    assert r.value("tempest_learner_nonfinite_batches_total") == 0
    wait_for(lambda: len(r.replay.priorities) >= 10, 10, what="priorities back")
    floors = [p for p in r.replay.priorities if set(p) == {1, 2}]
    trained = [p for p in r.replay.priorities if set(p) == {0, 3, 4, 5, 6, 7}]
    assert len(floors) == 5 and len(trained) == 5
    assert all(v == pytest.approx(PRIORITY_EPS) for p in floors for v in p.values())
    assert all(np.isfinite(v) for p in trained for v in p.values())
    # a reply of nothing but bad rows: no step, its priorities still fall
    r.replay.make_rows = lambda req: rows(req, poison=False, all_bad=True)
    r.replay.allow(1)
    wait_for(lambda: r.value("tempest_learner_rejected_rows_total", reason="nonfinite") == 5 + 8, 10,
             what="an all-bad reply screened")
    wait_for(lambda: any(len(p) == 8 for p in r.replay.priorities), 10, what="its floor priorities")
    assert r.value("tempest_learner_steps_total") == 5
    # a replay of another STATE_DIM: nothing trained on, no priority touched (no row is wrong)
    updates = len(r.replay.priorities)
    r.replay.make_rows = lambda req: wider(rows(req, poison=False))
    r.replay.allow(1)
    wait_for(lambda: r.value("tempest_learner_rejected_messages_total", reason="wrong_state_dim") == 1, 10,
             what="a sample of another state size dropped")
    r.replay.make_rows = lambda req: rows(req, poison=False)
    r.replay.allow(1)
    wait_for(lambda: r.value("tempest_learner_steps_total") == 6, 10, what="training on after them")
    wait_for(lambda: len(r.replay.priorities) == updates + 1, 10, what="the step's priorities")
    r.stop()


def wider(reply: SampleReply) -> SampleReply:
    pad = lambda s: np.pad(s, ((0, 0), (0, 1)))  # noqa: E731
    return dataclasses.replace(reply, state=pad(reply.state), next_state=pad(reply.next_state))


def test_a_forged_heartbeat_neither_breaks_publishing_nor_jumps_the_schedule(running, tmp_path):
    r = running(lambda req: rows(req, poison=False))
    sub = subscriber(r.addr("WEIGHTS_BIND"))
    push = pusher(r.addr("LEARNER_EPISODES_BIND"))
    for frames in (5_000, 2**53, 6_000, 7_000):   # the forged one, then the real worker again
        push.send(encode(Heartbeat("w1", frames, 3, 600.0, 270.0, time.time())))
    wait_for(lambda: r.value("tempest_learner_rejected_messages_total", reason="implausible_frames") == 1, 10,
             what="the forged heartbeat refused")
    wait_for(lambda: r.value("tempest_learner_global_frames") == 12_000, 10, what="the real heartbeats counted")
    time.sleep(0.3)   # the subscriber has joined
    r.replay.allow(2)
    msg = latest(sub, 2)
    assert msg.global_frames == 12_000
    assert msg.expert_ratio == pytest.approx(0.9 * 0.5 ** 1.2)   # not the 0.1 floor
    assert r.value("tempest_expert_ratio") == pytest.approx(msg.expert_ratio)
    r.stop()
    # its checkpoint resumes: the forged value is only a worker's baseline, within 2^53
    path = checkpoint.latest(tmp_path / "ckpt")
    saved = checkpoint.load_for_resume(path, "cpu", (D, (16,), NUM_ACTIONS, False))
    assert saved["bookkeeper"]["global_frames"] == 12_000
    sub.close(0)
    push.close(0)


def test_an_oversized_inbox_message_cuts_its_connection_and_control_stays_open(running, tmp_path):
    r = running()
    push = pusher(r.addr("LEARNER_EPISODES_BIND"))
    push.send(b"\0" * (SMALL_MESSAGE_BYTES + 1))
    wait_for(lambda: r.value("tempest_learner_connections_dropped_total", socket="inbox") >= 1, 10,
             what="the oversized message's connection cut")
    assert r.value("tempest_learner_malformed_total", reason="not_msgpack") == 0   # never assembled
    # the sender reconnects by itself; its next, normal message arrives
    push.send(encode(EpisodeSummary("s", "w1", 0, 0, False, 10, 1.0, 0.0, 150, 1500, 0, "terminal", True, {},
                                    time.time())))
    wait_for(lambda: r.value("tempest_learner_episodes_total") == 1, 20, what="the next episode summary")
    url = r.addr("CONTROL_BIND")
    token_file = tmp_path / "ckpt" / "control-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    anyone = ControlClient(url, timeout_s=5, token="")
    assert anyone.get()["batch_size"] == 8                    # get is open
    with pytest.raises(ControlError, match="unauthorized:"):
        anyone.set(batch_size=16)
    guess = ControlClient(url, timeout_s=5, token="guess")
    with pytest.raises(ControlError, match="unauthorized:"):
        guess.set(batch_size=16)
    assert r.value("tempest_learner_control_refused_total", reason="unauthorized") == 2
    owner = ControlClient(url, timeout_s=5, token=read_control_token(token_file))
    assert owner.set(batch_size=16)["batch_size"] == 16
    with pytest.raises(ControlError, match="rows per optimizer step"):
        owner.set(batch_size=65536, gradient_accumulation_steps=32)
    assert r.value("tempest_learner_control_refused_total", reason="bad_setting") == 1
    assert anyone.get()["batch_size"] == 16
    for client in (anyone, guess, owner):
        client.close()
    push.close(0)
    r.stop()


def test_a_checkpoint_with_impossible_books_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    """What the forged heartbeat once left behind: global frames past 2^64, checkpointed."""
    online = DuelingQNetwork(D, NUM_ACTIONS, (16,)).state_dict()
    books = {"global_frames": 2**64 + 5_000, "episodes": 0, "worker_frames": {"w1": 2**64 + 5_000},
             "eval_games": [], "eval_lives": [], "rewards": []}
    path = checkpoint.save(tmp_path / "ckpt", {"online": online, "bookkeeper": books, "counters": {"steps": 1}}, 1)
    env = {**learner_env(tmp_path, f"tcp://127.0.0.1:{free_port()}"), "RESUME": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert learner_main.main() == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"learner: {path} holds impossible counters (global_frames={2**64 + 5_000} is outside 0..2^53): "
                   "start a new run with RESUME=0 or another CHECKPOINT_DIR"]
    assert torch.load(path, weights_only=True)["bookkeeper"]["global_frames"] == 2**64 + 5_000   # left as it was
