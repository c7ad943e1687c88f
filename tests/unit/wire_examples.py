"""One fixed, deterministic example of every message kind (golden wire tests and regenerate.py).

Small arrays (B=2 rows, D=3 state features) so the golden files stay readable in a hex dump.
The GameState comes from decode_ram on a fixed RAM pattern, not invented field values, so a
change to the decoder's dtypes or shapes shows up as a golden-file change.
"""
from __future__ import annotations

from dataclasses import fields

import numpy as np

from tempest_common import messages as m
from tempest_common.game_state import GameState, decode_ram

B, D = 2, 3


def example_mode() -> GameState:
    ram = (np.arange(2 * 1024, dtype=np.int64) * 7 % 256).astype(np.uint8).reshape(2, 1024)
    return decode_ram(ram)


def _states(dtype=np.float16) -> np.ndarray:
    return (np.arange(B * D, dtype=np.float32).reshape(B, D) / 4).astype(dtype)


def examples() -> dict[str, m.Message]:
    """kind -> example message (one per kind in messages.MESSAGE_TYPES)."""
    out = [
        m.TransitionBatch(
            stream_id="w0-run1", worker_id="w0",
            episode_id=np.array([5, 5], np.int64), step=np.array([0, 1], np.int32),
            actor=np.array([m.ACTOR_EXPERT, m.ACTOR_NETWORK], np.uint8),
            action=np.array([3, m.NO_ACTION], np.int16),
            reward_game=np.array([150.0, 0.0], np.float32),
            reward_shaping=np.array([0.25, -0.5], np.float32),
            terminal=np.array([False, False]), truncated=np.array([False, True]),
            state=_states(), expert_action=np.array([3, m.NO_ACTION], np.int16), first_row=126),
        m.EpisodeSummary(
            stream_id="w0-run1", worker_id="w0", episode_id=5, game_id=2, evaluation=False,
            length=1234, game_reward=4500.0, shaping_reward=-1.5, score=4500, game_score=12850,
            level=3, end="terminal", game_over=True,
            actor_counts={"expert": 1000, "network": 200, "random": 34, "evaluation": 0},
            wall_time=1700000000.5),
        m.Heartbeat(worker_id="w0", frames_total=100000, episodes_total=42, video_fps=60.0,
                    frames_per_s=27.5, wall_time=1700000001.25, reward_scale=0.01, reward_clip=10.0,
                    death_penalty=5.0, survival_bonus=-0.25),
        m.ExpertRequest(request_id=7, states=example_mode()),
        m.ExpertReply(request_id=7, actions=np.array([1, 17], np.int16), error=None),
        m.SampleRequest(request_id=8, batch_size=2, n_step=3, gamma=0.99, prioritized=True,
                        beta=0.4, wait_s=0.5),
        m.SampleReply(
            request_id=8, error=None, index=np.array([10, 2 ** 40], np.uint64),
            state=_states(np.float32), action=np.array([0, 5], np.int16),
            reward=np.array([1.5, -0.25], np.float32),
            discount=np.array([0.970299, 0.0], np.float32),
            next_state=_states(np.float32) + 1, weight=np.array([1.0, 0.5], np.float32),
            actor=np.array([m.ACTOR_RANDOM, m.ACTOR_EVALUATION], np.uint8),
            expert_action=np.array([7, m.NO_ACTION], np.int16)),
        m.PriorityUpdate(request_id=9, index=np.array([10, 2 ** 40], np.uint64),
                         priority=np.array([0.5, 2.0], np.float32)),
        m.Ack(request_id=9, error="replay is empty"),
        m.WeightsSchedule(
            version=12, weights={"fc1.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
                                 "fc1.bias": np.array([0.5, -0.5], np.float32)},
            expert_ratio=0.25, epsilon=0.05, evaluation_share=0.1, evaluation_epsilon=0.0,
            global_frames=5000000, wall_time=1700000002.0, incarnation="20261129-120000-ab12cd34:1700000000.5"),
        m.ControlRequest(request_id=10, op="set", settings={"lr": 0.0001, "n_step": 5,
                                                           "use_per": True, "note": "x"},
                          token="0123456789abcdef"),
        m.ControlReply(request_id=10, ok=False, settings={"lr": 0.00025, "n_step": 3},
                       error="LR=-1 is out of range: allowed 0.0 <= value <= 1.0"),
        m.PriorityReset(request_id=11),
    ]
    return {msg.KIND: msg for msg in out}


def assert_same(a, b) -> None:
    """Field-by-field equality (messages compare by identity because they hold arrays)."""
    assert type(a) is type(b), (type(a), type(b))
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, GameState):
            assert isinstance(y, GameState)
            for name, arr in x.to_arrays().items():
                _same_array(arr, getattr(y, name), f"{f.name}.{name}")
        elif isinstance(x, np.ndarray):
            _same_array(x, y, f.name)
        elif isinstance(x, dict) and x and isinstance(next(iter(x.values())), np.ndarray):
            assert list(x) == list(y), f.name
            for k in x:
                _same_array(x[k], y[k], f"{f.name}[{k}]")
        else:
            assert x == y and type(x) is type(y), (f.name, x, y)


def _same_array(x, y, where):
    assert isinstance(y, np.ndarray), where
    assert x.dtype == y.dtype and x.shape == y.shape, (where, x.dtype, y.dtype, x.shape, y.shape)
    assert np.array_equal(x, y), where
