"""Integration: the real learner process trained through the real replay service and Redis."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import zmq

from services.learner import checkpoint
from services.learner.control import ControlClient, read_control_token
from services.replay.client import TransitionSender
from tempest_common.actions import NUM_ACTIONS
from tempest_common.network import network_from_state_dict
from tempest_common.messages import EpisodeSummary, Heartbeat, TransitionBatch, WeightsSchedule
from tempest_common.wire import decode, encode
from tests.conftest import REPO, free_port, scrape, start_service, stop_process, wait_for

pytestmark = pytest.mark.integration
N_STATES, GAMMA = 5, 0.9


def q_star() -> np.ndarray:
    """Chain MDP: odd actions move right (reward 1 on reaching the last state, terminal), even
    actions move left (state 0 stays).  Q*(s, right) = g^(N-2-s), Q*(s, left) = g V*(max(s-1, 0))."""
    v = GAMMA ** (N_STATES - 2 - np.arange(N_STATES - 1))
    q = np.zeros((N_STATES - 1, NUM_ACTIONS))
    for s in range(N_STATES - 1):
        q[s, 1::2] = v[s]
        q[s, 0::2] = GAMMA * v[max(s - 1, 0)]
    return q


def chain_episodes(rng, count: int):
    for e in range(count):
        s, rows = int(rng.integers(0, N_STATES - 1)), []
        for t in range(30):
            a = int(rng.integers(0, NUM_ACTIONS))
            nxt = s + 1 if a % 2 else max(s - 1, 0)
            done = nxt == N_STATES - 1
            rows.append((s, a, 1.0 if done else 0.0, done))
            s = nxt
            if done:
                break
        truncated_tail = [] if rows[-1][3] else [(s, -1, 0.0, False)]
        yield e, rows, truncated_tail


def one_hot(states) -> np.ndarray:
    return np.eye(N_STATES, dtype=np.float32)[np.asarray(states)]


def send_chain(sender: TransitionSender, episodes: int, seed: int = 0) -> int:
    rows_sent = 0
    for e, rows, tail in chain_episodes(np.random.default_rng(seed), episodes):
        allrows = rows + tail
        b = len(allrows)
        trunc = np.array([i == len(rows) for i in range(b)])
        reward = np.array([r for _, _, r, _ in allrows], np.float32)
        sender.send(TransitionBatch(
            "chain", "test", np.full(b, e, np.int64), np.arange(b, dtype=np.int32), np.full(b, 2, np.uint8),
            np.array([a for _, a, _, _ in allrows], np.int16), reward, np.zeros(b, np.float32),
            np.array([d for *_, d in allrows]), trunc, one_hot([s for s, *_ in allrows])))
        rows_sent += b
    return rows_sent


@pytest.fixture()
def stack(redis_server, tmp_path):
    p = {k: free_port() for k in ("pull", "router", "rmetrics", "episodes", "weights", "control", "lmetrics")}
    replay = start_service("services.replay.main", {
        "REDIS_URL": redis_server, "REPLAY_PULL_BIND": f"tcp://127.0.0.1:{p['pull']}",
        "REPLAY_BIND": f"tcp://127.0.0.1:{p['router']}", "METRICS_PORT": str(p["rmetrics"]),
        "STATE_DIM": str(N_STATES), "REPLAY_STATE_DTYPE": "float32", "MIN_SIZE_TO_SAMPLE": "500",
        "REPLAY_CAPACITY": "100000", "SEED": "1"}, tmp_path / "replay.log")
    wait_for(lambda: scrape(p["rmetrics"]), 30, what="replay up")
    learner_env = {
        "REPLAY_ADDR": f"tcp://127.0.0.1:{p['router']}", "LEARNER_EPISODES_BIND": f"tcp://127.0.0.1:{p['episodes']}",
        "WEIGHTS_BIND": f"tcp://127.0.0.1:{p['weights']}", "CONTROL_BIND": f"tcp://127.0.0.1:{p['control']}",
        "METRICS_PORT": str(p["lmetrics"]), "STATE_DIM": str(N_STATES), "HIDDEN": "64,64", "DEVICE": "cpu",
        "CHECKPOINT_DIR": str(tmp_path / "ckpt"), "SEED": "0", "N_STEP": "1", "GAMMA": str(GAMMA),
        "BATCH_SIZE": "256", "LR": "0.002", "LR_SCHEDULE": "none", "TAU": "0.02",
        "HARD_TARGET_REFRESH_EVERY_STEPS": "0",
        "TRAINING_STEPS_PER_SAMPLE": "0", "PRIORITIZED": "1", "MAX_GRAD_NORM": "10", "PUBLISH_EVERY_STEPS": "100"}
    procs = []

    def start_learner(**extra):
        proc = start_service("services.learner.main", {**learner_env, **{k: str(v) for k, v in extra.items()}},
                             tmp_path / f"learner{len(procs)}.log")
        procs.append(proc)
        wait_for(lambda: scrape(p["lmetrics"]), 60, what="learner up")
        return proc
    sender = TransitionSender(f"tcp://127.0.0.1:{p['pull']}")
    yield p, sender, start_learner, tmp_path, replay
    for proc in procs:
        stop_process(proc)
    stop_process(replay)


def latest_weights(port: int, min_version: int, timeout: float) -> WeightsSchedule:
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sub.poll(500):
                msg = decode(sub.recv(), expect=WeightsSchedule)
                if msg.version >= min_version:
                    return msg
        raise AssertionError(f"no weights version >= {min_version} within {timeout} s")
    finally:
        sub.close(0)


def test_learns_q_star_of_a_chain_through_replay_and_redis(stack):
    p, sender, start_learner, *_ = stack
    send_chain(sender, 400)
    start_learner()
    # 3000 optimizer steps at batch 256 (publishes every 100 steps -> version 31 after 3000)
    msg = latest_weights(p["weights"], 31, 240)
    net = network_from_state_dict(msg.weights)
    with torch.no_grad():
        q = net(torch.from_numpy(one_hot(range(N_STATES - 1)))).numpy()
    rel = np.abs(q - q_star()) / q_star()
    assert rel.max() < 0.05, f"max relative error {rel.max():.3f}\n{q[:, :2]}\nvs\n{q_star()[:, :2]}"
    m = scrape(p["lmetrics"])
    assert m["tempest_learner_steps_total"] >= 3000 and m["tempest_learner_nonfinite_batches_total"] == 0
    assert 0 < m["tempest_learner_grad_clip_ratio"] <= 1 and m["tempest_learner_target_age_steps"] >= 3000
    # the step values as aggregates over the scrape interval (intervals.py), extremes around the means
    assert m["tempest_learner_interval_steps"] >= 1
    for name in ("loss", "grad_norm", "grad_clip_ratio"):
        lo, mean, hi = (m[f"tempest_learner_{name}{s}"] for s in ("_min", "", "_max"))
        assert lo <= mean <= hi, (name, lo, mean, hi)
    assert m["tempest_learner_q_min"] <= m["tempest_learner_q_mean"] <= m["tempest_learner_q_max"]
    assert 0 < m["tempest_learner_target_distance"] < 1      # soft updates: the target lags a little
    (info,) = [k for k in m if k.startswith("tempest_learner_run_info{")]
    assert 'run_id="' in info and m[info] == 1
    assert time.time() - 600 < m["tempest_learner_run_start_time_seconds"] <= time.time()


def test_control_checkpoint_resume_nan_and_schedule(stack):
    p, sender, start_learner, tmp, _ = stack
    send_chain(sender, 100)
    proc = start_learner(EXPERT_RATIO_START="0.9", EXPERT_RATIO_MIN="0.2", EXPERT_RATIO_DECAY="0.5",
                         EXPERT_RATIO_DECAY_FRAMES="1000", PUBLISH_EVERY_STEPS="10", CHECKPOINT_EVERY_FRAMES="8000")
    ctl = [sys.executable, "-m", "services.learner.ctl", "--addr", f"tcp://127.0.0.1:{p['control']}",
           "--token-file", str(tmp / "ckpt" / "control-token")]   # the learner wrote it at start
    run = lambda *args: subprocess.run([*ctl, *args], cwd=REPO, capture_output=True, text=True, timeout=30)  # noqa
    out = run("set", "lr=0.0005", "n_step=3")
    assert out.returncode == 0, out.stderr
    assert "lr = 0.0005" in out.stdout
    wait_for(lambda: scrape(p["lmetrics"])["tempest_learner_lr"] == 0.0005, 20, what="the new lr in force")
    # each change logged with its before and after values, and exported for the dashboard's marks
    changes = [json.loads(line) for line in (tmp / "ckpt" / "setting-changes.jsonl").read_text().splitlines()]
    # (the stack starts at LR 0.002, N_STEP 1)
    assert [(c["name"], c["before"], c["after"]) for c in changes] == [("lr", 0.002, 0.0005), ("n_step", 1, 3)]
    m = scrape(p["lmetrics"])
    assert m['tempest_learner_setting_before_change{name="lr"}'] == 0.002
    assert abs(m['tempest_learner_setting_change_time_seconds{name="n_step"}'] - changes[1]["time"]) < 1
    assert scrape(p["lmetrics"])['tempest_learner_setting{name="n_step"}'] == 3
    bad = run("set", "lr=5")
    assert bad.returncode == 1 and "lr=5 is out of range" in bad.stderr
    assert run("set", "warp_speed=9").returncode == 1
    assert "lr = 0.0005" in run("get", "lr").stdout
    # heartbeats move the global frame count; the schedule decays to its floor, not below
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{p['episodes']}")
    for frames in (5_000, 20_000):
        push.send(encode(Heartbeat("w1", frames, 3, 600.0, 270.0, time.time())))
    push.send(encode(EpisodeSummary("s", "w1", 0, 0, True, 10, 1.0, 0.0, 150, 1500, 0, "terminal", True,
                                    {"network": 10}, time.time())))
    push.send(b"not a message")
    wait_for(lambda: scrape(p["lmetrics"])["tempest_learner_global_frames"] == 20_000, 20, what="global frames")
    msg = latest_weights(p["weights"], 1, 60)
    assert msg.global_frames == 20_000 and msg.expert_ratio == pytest.approx(0.2)
    first_incarnation = msg.incarnation
    m = scrape(p["lmetrics"])
    assert m["tempest_expert_ratio"] == pytest.approx(0.2)
    assert m['tempest_dqn_reward_mean{window="1M"}'] == 1500 and m['tempest_dqn_evaluation_games{window="1M"}'] == 1
    assert m['tempest_dqn_life_reward_mean{window="5M"}'] == 150 and m['tempest_dqn_evaluation_lives{window="5M"}'] == 1
    # 20k frames crossed the 8k and 16k marks at once: only the latest is written, named after the mark
    mark = tmp / "ckpt" / "mark-000000016000.pt"
    wait_for(mark.exists, 10, what="the 16k-frame mark")
    assert sorted(f.name for f in (tmp / "ckpt").glob("mark-*")) == [mark.name]
    mark_written = mark.stat().st_mtime_ns
    assert m['tempest_learner_malformed_total{reason="not_msgpack"}'] == 1
    steps_before = scrape(p["lmetrics"])["tempest_learner_steps_total"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    ckpt = checkpoint.load(checkpoint.latest(tmp / "ckpt"))
    assert ckpt["counters"]["steps"] >= steps_before > 0
    assert ckpt["live"]["lr"] == 0.0005 and ckpt["bookkeeper"]["global_frames"] == 20_000
    # resumes counters, schedule state and live settings; explicit env settings (TAU) still win
    start_learner(LR="", N_STEP="", TAU="0.03", CHECKPOINT_EVERY_FRAMES="8000")
    m = scrape(p["lmetrics"])
    assert m["tempest_learner_global_frames"] == 20_000
    assert m['tempest_learner_setting{name="lr"}'] == 0.0005 and m['tempest_learner_setting{name="n_step"}'] == 3
    assert m['tempest_learner_setting{name="tau"}'] == 0.03
    msg = latest_weights(p["weights"], ckpt["counters"]["weights_version"] + 1, 60)
    assert msg.expert_ratio == pytest.approx(0.2)
    # the same run (its id), another incarnation: workers take these weights whatever their version
    assert msg.incarnation != first_incarnation
    assert msg.incarnation.rsplit(":", 1)[0] == first_incarnation.rsplit(":", 1)[0] == ckpt["run_id"]
    assert ckpt["counters"]["last_mark"] == 16_000
    push.send(encode(Heartbeat("w1", 25_000, 3, 600.0, 270.0, time.time())))
    wait_for((tmp / "ckpt" / "mark-000000024000.pt").exists, 20, what="the 24k-frame mark after resuming")
    assert mark.stat().st_mtime_ns == mark_written, "a resumed run does not rewrite its marks"
    push.close(0)


def test_marks_survive_rotation(tmp_path):
    assert [checkpoint.mark_due(f, 250_000, last) for f, last in
            ((249_999, 0), (250_000, 0), (260_000, 250_000), (760_000, 250_000), (900_000, 0))] == \
        [None, 250_000, None, 750_000, 750_000]
    assert checkpoint.mark_due(10**9, 0, 0) is None   # 0 = off
    for step in range(1, 30):
        checkpoint.save(tmp_path, {"run_id": "r1", "step": step}, step * 100)
        if step % 7 == 0:
            checkpoint.save_mark(tmp_path, {"run_id": "r1", "step": step}, step * 1000)
    names = sorted(f.name for f in tmp_path.iterdir())
    assert names == [f"checkpoint-r1-{s * 100:012d}.pt" for s in (27, 28, 29)] + \
        [f"mark-{s * 1000:012d}.pt" for s in (7, 14, 21, 28)], "only rolling checkpoints rotate; no temp files left"
    assert checkpoint.latest(tmp_path).name == "checkpoint-r1-000000002900.pt"
    assert checkpoint.load(tmp_path / "mark-000000021000.pt")["step"] == 21


@pytest.mark.parametrize("content", ["network", "garbage"])
def test_a_checkpoint_that_does_not_fit_is_refused_in_one_line(tmp_path, content):
    """RESUME=1 over a checkpoint of another network shape, or an unreadable one: exit 2, one line."""
    ckpt_dir = tmp_path / "ckpt"
    if content == "network":
        from tempest_common.network import DuelingQNetwork
        online = DuelingQNetwork(N_STATES, NUM_ACTIONS, (64, 32)).state_dict()
        path = checkpoint.save(ckpt_dir, {"online": online}, 1234)
        expected = (f"learner: {path} does not fit this network (checkpoint: {N_STATES} -> 64,32 -> {NUM_ACTIONS}; "
                    f"configured: {N_STATES} -> 16 -> {NUM_ACTIONS}): start a new run with RESUME=0 or another "
                    "CHECKPOINT_DIR")
    else:
        ckpt_dir.mkdir()
        path = ckpt_dir / "checkpoint-000000001234.pt"
        path.write_bytes(b"not a checkpoint")
        expected = (f"learner: {path} cannot be read as a learner checkpoint (not a torch file of tensors and plain "
                    "values): start a new run with RESUME=0 or another CHECKPOINT_DIR")
    env = dict(os.environ, PYTHONPATH=str(REPO), **lone_learner_env(ckpt_dir))
    out = subprocess.run([sys.executable, "-m", "services.learner.main"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert out.stderr.strip().splitlines() == [expected]


def lone_learner_env(ckpt_dir) -> dict:
    """A learner of a 16-wide network with no replay to talk to, resuming from `ckpt_dir`."""
    ports = {k: free_port() for k in ("e", "w", "c", "r")}
    return dict(REPLAY_ADDR=f"tcp://127.0.0.1:{ports['r']}", LEARNER_EPISODES_BIND=f"tcp://127.0.0.1:{ports['e']}",
                WEIGHTS_BIND=f"tcp://127.0.0.1:{ports['w']}", CONTROL_BIND=f"tcp://127.0.0.1:{ports['c']}",
                METRICS_PORT="0", DEVICE="cpu", HIDDEN="16", STATE_DIM=str(N_STATES), RESUME="1",
                CHECKPOINT_DIR=str(ckpt_dir))


def test_a_truncated_newest_checkpoint_is_passed_over_not_crash_looped_on(tmp_path):
    """Issue 15: a damaged newest checkpoint made every restart exit 2.  Now the service says which
    file it passes over and why, resumes the one before it, and runs."""
    from prometheus_client import CollectorRegistry

    from services.learner.learner import Learner
    from services.learner.metrics import LearnerMetrics
    from services.learner.settings import load_learner_config, load_live_settings
    env = lone_learner_env(tmp_path / "ckpt")
    run = Learner(load_learner_config(env), load_live_settings(env), LearnerMetrics(CollectorRegistry()))
    for sock in (run.inbox, run.pub):   # only its checkpoints are wanted: the service binds the same addresses
        sock.close(0)
    run.control.close()
    run.replay.close()
    for run.steps in (100, 200):
        newest = checkpoint.save(tmp_path / "ckpt", run.checkpoint_dict(), run.steps)
    newest.write_bytes(newest.read_bytes()[:1000])    # cut short
    proc = start_service("services.learner.main", env, tmp_path / "learner.log")
    try:
        wait_for(lambda: f"learner {run.run_id} on cpu" in (tmp_path / "learner.log").read_text(), 60,
                 what="the resumed run's loop (its SIGTERM handler in place)")
    finally:
        stop_process(proc)
    assert proc.returncode == 0
    text = (tmp_path / "learner.log").read_text()
    previous = tmp_path / "ckpt" / f"checkpoint-{run.run_id}-{100:012d}.pt"
    assert f"checkpoint {newest} passed over: it cannot be read as a learner checkpoint (" in text
    assert f"resumed run {run.run_id} from {previous} at step 100" in text and "Traceback" not in text


def test_a_setting_change_is_answered_at_once_while_samples_are_in_flight(stack):
    """The replay stops answering (SIGSTOP) with sample requests of batch 100 out.  A change of
    batch_size is answered within a second and no reply to those old requests is trained on once
    the replay answers them: every batch trained on after the change has 64 rows."""
    p, sender, start_learner, tmp, replay = stack
    send_chain(sender, 100)
    start_learner(BATCH_SIZE="100")
    wait_for(lambda: scrape(p["lmetrics"])["tempest_learner_steps_total"] >= 5, 60, what="training")
    control = ControlClient(f"tcp://127.0.0.1:{p['control']}", timeout_s=5,
                            token=read_control_token(tmp / "ckpt" / "control-token"))
    os.kill(replay.pid, signal.SIGSTOP)
    try:
        time.sleep(0.5)  # the learner's next requests go out and stay unanswered
        t0 = time.monotonic()
        assert control.set(batch_size=64)["batch_size"] == 64
        assert time.monotonic() - t0 < 1.0, "the change must not wait for the requests in flight"
        before = scrape(p["lmetrics"])  # no step can happen while the replay is stopped
    finally:
        os.kill(replay.pid, signal.SIGCONT)
    steps0, samples0 = before["tempest_learner_steps_total"], before["tempest_learner_samples_total"]
    wait_for(lambda: scrape(p["lmetrics"])["tempest_learner_steps_total"] >= steps0 + 20, 60, what="training on")
    m = scrape(p["lmetrics"])
    assert m["tempest_learner_samples_total"] - samples0 == 64 * (m["tempest_learner_steps_total"] - steps0)
    assert control.get()["batch_size"] == 64 and m['tempest_learner_setting{name="batch_size"}'] == 64
    control.close()


def test_a_nan_batch_is_skipped_and_counted(tmp_path):
    """The learner's own step on a batch with a NaN return (the replay drops NaN transitions at
    insert, so this stands for a network or data fault that slips through)."""
    from prometheus_client import CollectorRegistry

    from services.learner.learner import Learner
    from services.learner.metrics import LearnerMetrics
    from services.learner.settings import load_learner_config, load_live_settings
    from tempest_common.messages import SampleReply

    ports = {k: free_port() for k in ("e", "w", "c")}
    cfg = load_learner_config({"STATE_DIM": str(N_STATES), "HIDDEN": "16", "DEVICE": "cpu", "METRICS_PORT": "0",
                               "LEARNER_EPISODES_BIND": f"tcp://127.0.0.1:{ports['e']}",
                               "WEIGHTS_BIND": f"tcp://127.0.0.1:{ports['w']}",
                               "CONTROL_BIND": f"tcp://127.0.0.1:{ports['c']}",
                               "REPLAY_ADDR": f"tcp://127.0.0.1:{free_port()}", "CHECKPOINT_DIR": str(tmp_path)})
    registry = CollectorRegistry()
    learner = Learner(cfg, load_live_settings({}), LearnerMetrics(registry))
    before = [p.detach().clone() for p in learner.online.parameters()]
    b = 4
    reward = np.array([0.0, np.nan, 1.0, 0.0], np.float32)
    reply = SampleReply(1, None, np.arange(b, dtype=np.uint64), one_hot([0, 1, 2, 3]), np.zeros(b, np.int16),
                        reward, np.full(b, GAMMA, np.float32), one_hot([1, 2, 3, 3]), np.ones(b, np.float32),
                        np.full(b, 2, np.uint8), np.full(b, -1, np.int16))
    learner.step([reply])
    assert registry.get_sample_value("tempest_learner_nonfinite_batches_total") == 1
    assert learner.steps == 0 and all(torch.equal(a, p) for a, p in zip(before, learner.online.parameters()))
    reward[1] = 0.5
    learner.step([reply])
    assert learner.steps == 1 and registry.get_sample_value("tempest_learner_steps_total") == 1


def test_control_answers_while_the_replay_is_away(tmp_path):
    ports = {k: free_port() for k in ("e", "w", "c", "m")}
    proc = start_service("services.learner.main", {
        "REPLAY_ADDR": f"tcp://127.0.0.1:{free_port()}", "LEARNER_EPISODES_BIND": f"tcp://127.0.0.1:{ports['e']}",
        "WEIGHTS_BIND": f"tcp://127.0.0.1:{ports['w']}", "CONTROL_BIND": f"tcp://127.0.0.1:{ports['c']}",
        "METRICS_PORT": str(ports["m"]), "DEVICE": "cpu", "HIDDEN": "16", "TRAINING_STEPS_PER_SAMPLE": "0",
        "CHECKPOINT_DIR": str(tmp_path / "ckpt")}, tmp_path / "learner.log")
    try:
        wait_for(lambda: scrape(ports["m"]), 60, what="learner up")
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "services.learner.ctl", "--addr", f"tcp://127.0.0.1:{ports['c']}",
                              "--token-file", str(tmp_path / "ckpt" / "control-token"),
                              "set", "epsilon=0.2", "batch_size=64"], cwd=REPO, capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == 0 and "epsilon = 0.2" in out.stdout and "batch_size = 64" in out.stdout, out.stderr
        assert time.monotonic() - t0 < 8, "control must not wait for a missing replay"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0
    finally:
        stop_process(proc)
