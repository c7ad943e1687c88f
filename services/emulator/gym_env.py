"""TempestEnv: the worker's game, by the worker's rules (GameSession), as a Gymnasium environment.

    env = TempestEnv(rompath="/path/to/roms")
    obs, info = env.reset(seed=0)          # float32[STATE_SIZE], see tempest_common.state_vector
    obs, reward, terminated, truncated, info = env.step(action)   # action: joint index 0..43

Every reset starts from the saved start of play, so the same actions give the same observations
(MAME is deterministic given its inputs).  An episode is one life: terminated at the death edge,
truncated after `max_episode_ticks`.  info["action"] is the action played (after the superzapper
gate); the reward is the worker's game reward, info["shaping"] the shaping reward apart.
"""
from __future__ import annotations

import os

import gymnasium as gym
import numpy as np

from tempest_common.actions import NUM_ACTIONS
from tempest_common.game_state import GameState, decode_ram
from tempest_common.state_vector import LOWER, STATE_SIZE, UPPER, encode_state

from .bridge import BridgeClosed
from .episodes import RewardConfig, game_reward
from .mame_process import check_rom_dir
from .session import DEATHS, GameSession


class TempestEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, rompath: str | None = None, reward: RewardConfig = RewardConfig(),
                 max_episode_ticks: int = 20_000, tick_timeout_s: float = 10.0, mame_binary: str | None = None):
        self.rompath = rompath or os.environ.get("TEMPEST_ROMPATH", "")
        check_rom_dir(self.rompath, mame_binary)
        self.reward_cfg = reward
        self.max_episode_ticks = max_episode_ticks
        self.tick_timeout_s = tick_timeout_s
        self.mame_binary = mame_binary
        self.observation_space = gym.spaces.Box(LOWER, UPPER, (STATE_SIZE,), np.float32)
        self.action_space = gym.spaces.Discrete(NUM_ACTIONS)
        self._session: GameSession | None = None
        self.game_state: GameState | None = None   # behind the latest observation (what the expert reads)
        self._ticks = 0
        self._episode_over = True

    # -- Gymnasium API ---------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if self._session is None:
            self._session = GameSession.launch(self.rompath, mame_binary=self.mame_binary,
                                               tick_timeout_s=self.tick_timeout_s)
        tick = self._session.restart()
        self.game_state = decode_ram(tick.ram)
        self._ticks = 0
        self._episode_over = False
        return encode_state(self.game_state), self._info(self.game_state)

    def step(self, action):
        if self._episode_over:
            raise RuntimeError("call reset() before step(), and again after an episode ends")
        if not self.action_space.contains(int(action)):
            raise ValueError(f"action must be an int in 0..{NUM_ACTIONS - 1}, got {action!r}")
        prev = self.game_state
        played = self._session.act(int(action))
        tick = self._session.next_decision()
        game = decode_ram(tick.ram)
        died = tick.kind in DEATHS
        reward = game_reward(int(game.score) - int(prev.score), died, self.reward_cfg)
        self._ticks += 1
        truncated = not died and self._ticks >= self.max_episode_ticks
        self.game_state, self._episode_over = game, died or truncated
        info = self._info(game)
        info["shaping"] = 0.0 if died else self.reward_cfg.survival_bonus
        info["action"] = played
        return encode_state(game, None if self._session.skipped else prev), reward, died, truncated, info

    def close(self):
        if self._session is not None:
            self._session.close(grace_s=3.0)
            self._session = None
        self.game_state, self._episode_over = None, True

    @staticmethod
    def _info(game: GameState) -> dict:
        return {"score": int(game.score), "lives": int(game.lives), "level": int(game.level),
                "mode": int(game.mode)}

    def __del__(self):
        try:
            self.close()
        except (BridgeClosed, OSError, AttributeError):
            pass


ENV_ID = "TempestMAME-v0"
if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="services.emulator.gym_env:TempestEnv")
