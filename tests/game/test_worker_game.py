"""Game tier: the real worker process on real MAME with the tempest1 ROM.

The test plays the roles of replay and learner with real ZeroMQ PULL sockets, and checks what
the worker sent against the raw RAM of every tick (the worker's TRACE_PATH), decoded here
independently of the project's GameState code.
"""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import zmq

from services.emulator.session import LONG_AGO, GameSession
from services.expert.policy import expert_actions
from tempest_common.actions import ACTIONS, NOOP, NUM_SPINNER, encode_action, gate_zap
from tempest_common.game_state import decode_ram
from tempest_common.messages import ACTOR_EXPERT, ACTOR_RANDOM, NO_ACTION, EpisodeSummary, Heartbeat, TransitionBatch
from tempest_common.ram_map import ZAPS_USED
from tempest_common.state_vector import LOWER, STATE_SIZE, UPPER
from tempest_common.wire import decode
from tests.conftest import children, free_port, pid_alive, scrape, start_service, stop_process, wait_for

pytestmark = pytest.mark.game
PLAY_SECONDS = 35


def bcd_score(ram: np.ndarray) -> int:
    digits = lambda b: (int(b) >> 4) * 10 + (int(b) & 0xF)  # noqa: E731
    return digits(ram[0x42]) * 10000 + digits(ram[0x41]) * 100 + digits(ram[0x40])


def worker_env(rompath: str, tmp_path, **extra) -> dict[str, str]:
    env = {"TEMPEST_ROMPATH": rompath, "EXPERT_ADDR": "", "EXPERT_RATIO": "0", "SEED": "5",
           "METRICS_PORT": str(free_port()), "EMULATOR_WORKDIR": str(tmp_path / "mame"),
           "REPLAY_ADDR": "", "LEARNER_EPISODES_ADDR": "", "HEARTBEAT_S": "0.5"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def test_worker_plays_random_episodes_and_reports_truthfully(rompath, tmp_path):
    ctx = zmq.Context.instance()
    replay, learner = ctx.socket(zmq.PULL), ctx.socket(zmq.PULL)
    replay_port, learner_port = replay.bind_to_random_port("tcp://127.0.0.1"), learner.bind_to_random_port("tcp://127.0.0.1")
    trace = tmp_path / "trace.npz"
    env = worker_env(rompath, tmp_path, REPLAY_ADDR=f"tcp://127.0.0.1:{replay_port}",
                     LEARNER_EPISODES_ADDR=f"tcp://127.0.0.1:{learner_port}", TRACE_PATH=trace,
                     TRANSITION_BATCH=32)
    proc = start_service("services.emulator.main", env, tmp_path / "worker.log")
    batches, summaries, heartbeats = [], [], []
    poller = zmq.Poller()
    poller.register(replay, zmq.POLLIN)
    poller.register(learner, zmq.POLLIN)

    def drain(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for sock, _ in poller.poll(100):
                msg = decode(sock.recv())
                {TransitionBatch: batches, EpisodeSummary: summaries, Heartbeat: heartbeats}[type(msg)].append(msg)
    try:
        drain(PLAY_SECONDS)
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        drain(1.0)
    finally:
        stop_process(proc)
        replay.close(0)
        learner.close(0)
    log = (tmp_path / "worker.log").read_text()
    assert proc.returncode == 0, log[-2000:]
    assert heartbeats and heartbeats[-1].frames_total > 1000, "worker made too few frames"

    t = np.load(trace)
    ram, ep_of_tick, step_of_tick = t["ram"], t["episode_id"], t["step"]
    tick_of = {(int(e), int(s)): i for i, (e, s) in enumerate(zip(ep_of_tick, step_of_tick)) if e >= 0}
    mode = ram[:, 0]
    dying = (ram[:, 0x201] & 0x80) != 0

    rows = 0
    for b in batches:
        assert np.all(np.isfinite(b.state.astype(np.float32)))
        assert b.state.shape[1] == STATE_SIZE
        assert np.all(b.expert_action == NO_ACTION), "no expert configured: no labels"
        st = b.state.astype(np.float32)
        assert np.all(st >= LOWER) and np.all(st <= UPPER), "state value outside its documented range"
        for e, s in zip(b.episode_id, b.step):
            i = tick_of[(int(e), int(s))]
            assert mode[i] in (0x04, 0x20), f"transition from mode 0x{mode[i]:02x}"
            assert not dying[i]
        rows += len(b.episode_id)
    assert rows > 1000

    terminal = [s for s in summaries if s.end == "terminal"]
    assert len(terminal) >= 3, f"expected several deaths in {PLAY_SECONDS} s of random play"
    terminal_rows = {(int(e), int(s)) for b in batches for e, s, term in zip(b.episode_id, b.step, b.terminal) if term}
    for s in terminal:
        last = tick_of[(s.episode_id, s.length - 1)]
        edge = last + 1 + int(np.argmax(dying[last + 1:] | np.isin(mode[last + 1:], (0x04, 0x20))))
        assert dying[edge], "a terminal episode must end on the death edge"
        assert s.game_score == bcd_score(ram[edge]), "reported game score differs from the BCD score in RAM"
        first = tick_of[(s.episode_id, 0)]
        assert s.score == bcd_score(ram[edge]) - bcd_score(ram[first])
        assert (s.episode_id, s.length - 1) in terminal_rows
    assert all(s.length > 0 for s in summaries)


def test_kill_mame_restarts_and_stopping_worker_stops_mame(rompath, tmp_path):
    env = worker_env(rompath, tmp_path)
    port = int(env["METRICS_PORT"])
    proc = start_service("services.emulator.main", env, tmp_path / "worker.log")
    try:
        wait_for(lambda: scrape(port).get("tempest_frames_total", 0) > 100, 60, what="frames from the worker")
        mame_pid = wait_for(lambda: children(proc.pid), 10, what="MAME child")[0]
        before = scrape(port)["tempest_frames_total"]
        os.kill(mame_pid, signal.SIGKILL)
        wait_for(lambda: scrape(port).get("tempest_mame_restarts_total", 0) >= 1, 30, what="a MAME restart")
        wait_for(lambda: scrape(port)["tempest_frames_total"] > before + 200, 60, what="frames after the restart")
        new_pid = children(proc.pid)[0]
        assert new_pid != mame_pid and pid_alive(new_pid)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        wait_for(lambda: not pid_alive(new_pid), 10, what="MAME to exit")
        assert time.monotonic() - t0 < 10, "stopping the worker must stop MAME within seconds"
        assert proc.returncode == 0
    finally:
        stop_process(proc)


def test_a_label_is_gated_like_the_action_played(rompath, tmp_path):
    """session.gate(a) is what act(a) plays on that tick, before and after the answer: a zap with
    a use left plays; one in the cooldown or with none left becomes the same action without it."""
    zap = encode_action(True, True, NOOP % NUM_SPINNER)
    session = GameSession.launch(rompath, workdir=str(tmp_path / "mame"))
    played = []
    try:
        while len(played) < 400:
            tick = session.next_decision()
            if not tick.decides:
                session.pass_tick()
                continue
            before = session.gate(zap)
            played.append(session.act(zap))
            assert before == played[-1] == session.gate(zap)
    finally:
        session.close(grace_s=0.0)
    zapped = sum(ACTIONS[a].zap for a in played)
    assert zapped >= 1                                         # the first zap of the level plays
    assert set(played) - {zap} == {zap - 2 * NUM_SPINNER}      # the others: the zap gated away


def test_rows_carry_the_experts_gated_choice_whoever_played(rompath, tmp_path):
    """EXPERT_LABELS on: expert rows are labelled with their action, random rows with the real
    expert's choice on their state after the superzapper gate as it stood on that tick."""
    expert_port, expert_metrics = free_port(), free_port()
    expert = start_service("services.expert.main", {"EXPERT_BIND": f"tcp://127.0.0.1:{expert_port}",
                                                    "METRICS_PORT": str(expert_metrics)}, tmp_path / "expert.log")
    replay = zmq.Context.instance().socket(zmq.PULL)
    replay_port = replay.bind_to_random_port("tcp://127.0.0.1")
    trace = tmp_path / "trace.npz"
    env = worker_env(rompath, tmp_path, EXPERT_ADDR=f"tcp://127.0.0.1:{expert_port}", EXPERT_RATIO=0.5,
                     ACTOR_DRAW="tick", EXPERT_TIMEOUT_MS=1000, EXPERT_BACKOFF_S=0.2, WEIGHTS_ADDR="", TRACE_PATH=trace,
                     REPLAY_ADDR=f"tcp://127.0.0.1:{replay_port}", TRANSITION_BATCH=32)
    batches = []

    def drain(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if replay.poll(100):
                batches.append(decode(replay.recv(), expect=TransitionBatch))
    try:
        wait_for(lambda: scrape(expert_metrics), 30, what="expert up")
        worker = start_service("services.emulator.main", env, tmp_path / "worker.log")
        try:
            drain(25)
            metrics = scrape(int(env["METRICS_PORT"]))
            worker.send_signal(signal.SIGTERM)
            worker.wait(20)
            drain(1.0)
        finally:
            stop_process(worker)
    finally:
        stop_process(expert)
        replay.close(0)
    assert worker.returncode == 0 and metrics["tempest_mame_restarts_total"] == 0
    labelled = metrics['tempest_emulator_expert_labels_total{result="labelled"}']
    missing = metrics['tempest_emulator_expert_labels_total{result="missing"}']
    assert abs(labelled + missing - (metrics["tempest_frames_total"] - 1)) <= 1   # all but the saving tick

    t = np.load(trace)
    ram = t["ram"]
    tick_of = {(int(e), int(s)): i for i, (e, s) in enumerate(zip(t["episode_id"], t["step"])) if e >= 0}
    col = lambda name: np.concatenate([getattr(b, name) for b in batches])  # noqa: E731
    episode, step, actor = col("episode_id"), col("step"), col("actor")
    action, label = col("action"), col("expert_action")
    ticks = np.array([tick_of[(int(e), int(s))] for e, s in zip(episode, step)])
    assert len(ticks) > 500
    # the session's gate, replayed from the trace: ticks since the last zap played, zaps used in RAM
    played_on = dict(zip(ticks.tolist(), action.tolist()))
    since, since_at = LONG_AGO, np.zeros(len(ram), np.int64)
    for i in range(len(ram)):
        since += 1
        since_at[i] = since
        if played_on.get(i, -1) >= 0 and ACTIONS[played_on[i]].zap:
            since = 0
    choice = expert_actions(decode_ram(ram[ticks]))
    expected = np.array([gate_zap(int(a), int(ram[i, ZAPS_USED]), int(since_at[i])) for a, i in zip(choice, ticks)])

    first, truncated = (episode == 0) & (step == 0), col("truncated")
    assert label[first].tolist() == [NO_ACTION]              # the tick that saved the start of play
    assert np.all(label[truncated] == NO_ACTION)             # bootstrap-only rows, whoever played them
    expert_rows, random_rows = (actor == ACTOR_EXPERT) & ~truncated, (actor == ACTOR_RANDOM) & ~first & ~truncated
    assert expert_rows.sum() > 100 and random_rows.sum() > 100
    assert np.array_equal(label[expert_rows], action[expert_rows])
    assert np.array_equal(label[expert_rows], expected[expert_rows]), "the expert played its own gated choice"
    got = random_rows & (label != NO_ACTION)
    assert got.sum() >= 0.9 * random_rows.sum(), "most random rows should carry a label"
    assert np.array_equal(label[got], expected[got])
