"""Game tier: TempestEnv on the real ROM passes Gymnasium's checker and is deterministic."""
from __future__ import annotations

import shutil

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from services.emulator.gym_env import ENV_ID, TempestEnv
from services.emulator.mame_process import RomError, check_rom_dir

pytestmark = pytest.mark.game


@pytest.fixture(scope="module")
def env(rompath):
    e = gym.make(ENV_ID, rompath=rompath)
    yield e
    e.close()


def test_check_env_passes_without_exemptions(env):
    check_env(env.unwrapped, skip_render_check=True)


def test_same_seed_and_actions_give_identical_observations(env):
    actions = np.random.default_rng(11).integers(0, env.action_space.n, 200)

    def play():
        obs, _ = env.reset(seed=123)
        out, rewards = [obs], []
        for a in actions:
            obs, r, terminated, truncated, _ = env.step(int(a))
            out.append(obs)
            rewards.append(r)
            if terminated or truncated:
                break
        return np.array(out), np.array(rewards)

    first, r1 = play()
    second, r2 = play()
    assert len(first) == 201, "200 random actions should not end the first life from the start state"
    assert np.array_equal(first, second) and np.array_equal(r1, r2)
    assert len({o.tobytes() for o in first}) > 50, "observations should change as the game plays"


def test_episode_ends_on_death_with_penalty(env):
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(5000):
        obs, reward, terminated, truncated, info = env.step(int(rng.integers(0, env.action_space.n)))
        if terminated:
            assert reward <= -env.unwrapped.reward_cfg.death_penalty + env.unwrapped.reward_cfg.clip
            assert obs[2] == 0.0  # player_alive feature
            return
    pytest.fail("no death in 5000 random steps")


def test_bad_rom_is_a_clear_error(rompath, tmp_path):
    with pytest.raises(RomError, match="TEMPEST_ROMPATH=.*no tempest1"):
        TempestEnv(rompath=str(tmp_path))
    bad = tmp_path / "roms"
    shutil.copytree(f"{rompath}/tempest1", bad / "tempest1")
    target = bad / "tempest1" / "136002-113.d1"
    target.chmod(0o644)
    target.write_bytes(b"\0" * target.stat().st_size)
    with pytest.raises(RomError, match="MAME rejects the tempest1 ROM set"):
        check_rom_dir(bad)
