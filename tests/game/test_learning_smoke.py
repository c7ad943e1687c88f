"""Game tier: the learner's maths learns from the expert on the real game.

The expert plays lives from the saved start of play (different no-op offsets give different
lives, by the worker's rules through TempestEnv); a network is trained by the learner's own
train_step (TD + DQfD margin loss) on the expert rows of some lives, then asked for its greedy
action on the states of lives it never saw.  It must be wrong at most half as often as always
answering the expert's most common action would be.  (Twice that constant guess's hit rate cannot
be asked: the expert plays its most common action on ~45% of ticks, so it would need over 90%.)
"""
from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from services.emulator.gym_env import TempestEnv
from services.expert.policy import expert_action
from services.learner.dqn import Batch, train_step
from tempest_common.actions import NOOP, NUM_ACTIONS
from tempest_common.network import DuelingQNetwork
from tempest_common.state_vector import STATE_SIZE

pytestmark = pytest.mark.game
TICKS_PER_LIFE = 600
GAMMA = 0.99


def expert_lives(env: TempestEnv, offsets) -> list[dict]:
    """One dict of arrays per life: state, action (the expert's, as played), reward, next_state, done."""
    lives = []
    for noops in offsets:
        obs, _ = env.reset()
        for _ in range(noops):
            obs, *_ = env.step(NOOP)
        rows = collections.defaultdict(list)
        for _ in range(TICKS_PER_LIFE):
            action = expert_action(env.game_state)
            nxt, reward, terminated, truncated, info = env.step(action)
            for key, value in (("state", obs), ("action", info["action"]), ("reward", reward),
                               ("next_state", nxt), ("done", terminated)):
                rows[key].append(value)
            obs = nxt
            if terminated or truncated:
                break
        lives.append({k: np.asarray(v) for k, v in rows.items()})
    return lives


def test_a_network_trained_on_expert_rows_picks_the_experts_actions_on_unseen_lives(rompath):
    env = TempestEnv(rompath=rompath)
    try:
        train_lives = expert_lives(env, [0, 3, 7, 12, 18, 25])
        test_lives = expert_lives(env, [1, 9, 21, 30])
    finally:
        env.close()
    train = {k: np.concatenate([life[k] for life in train_lives]) for k in train_lives[0]}
    test = {k: np.concatenate([life[k] for life in test_lives]) for k in test_lives[0]}

    torch.manual_seed(0)
    online = DuelingQNetwork(STATE_SIZE, NUM_ACTIONS, (256, 256))
    target = DuelingQNetwork(STATE_SIZE, NUM_ACTIONS, (256, 256))
    target.load_state_dict(online.state_dict())
    optimizer = torch.optim.Adam(online.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    n = len(train["action"])
    for step in range(800):
        i = rng.integers(0, n, 256)
        t = lambda key, dtype=torch.float32: torch.as_tensor(train[key][i], dtype=dtype)  # noqa: E731
        batch = Batch(state=t("state"), action=t("action", torch.long), reward=t("reward"),
                      discount=torch.as_tensor(GAMMA * (1.0 - train["done"][i]), dtype=torch.float32),
                      next_state=t("next_state"), weight=torch.ones(256), expert_action=t("action", torch.long))
        stats = train_step(online, target, optimizer, [batch], max_grad_norm=10.0, clamp=None, bc_weight=1.0,
                           bc_margin=0.05)
        assert stats.applied
        if step % 50 == 49:
            target.load_state_dict(online.state_dict())

    with torch.no_grad():
        greedy = online(torch.as_tensor(test["state"], dtype=torch.float32)).argmax(dim=1).numpy()
    agreement = float(np.mean(greedy == test["action"]))
    most_common = collections.Counter(test["action"].tolist()).most_common(1)[0][1] / len(test["action"])
    assert len(test["action"]) > 1000
    print(f"agreement {agreement:.3f}, most common action {most_common:.3f}")
    assert 1 - agreement <= (1 - most_common) / 2, \
        f"agrees with the expert on {agreement:.2f} of unseen ticks; the most common action alone on {most_common:.2f}"
