"""TempestEnv: the same game and Lua bridge as the worker, as a Gymnasium environment.

    env = TempestEnv(rompath="/path/to/roms")
    obs, info = env.reset(seed=0)          # float32[STATE_SIZE], see tempest_common.state_vector
    obs, reward, terminated, truncated, info = env.step(action)   # action: joint index 0..43

The first reset starts MAME, lets the bridge get through attract mode and level select, and
takes a MAME save state on the first play tick with the player alive; every reset loads that
state, so the same actions give the same observations (MAME is deterministic given its inputs;
the bridge keeps inputs neutral on the save/load frame).  An episode is one life: terminated at
the death edge; truncated after `max_episode_ticks`.  Ticks outside play and zoom (between
levels) are skipped inside step().  Reward: the scaled, clipped score delta minus the death
penalty (the worker's game reward); info["shaping"] carries the shaping reward apart.
"""
from __future__ import annotations

import os

import gymnasium as gym
import numpy as np

from tempest_common.actions import NUM_ACTIONS, decode_action
from tempest_common.game_state import decode_ram, is_start_of_play
from tempest_common.state_vector import LOWER, STATE_SIZE, UPPER, encode_state

from .bridge import CMD_ACT, CMD_EXIT, CMD_LOAD, CMD_SAVE, BridgeClosed, BridgeServer
from .episodes import RewardConfig, game_reward
from .mame_process import MameProcess, check_rom_dir


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
        self._server: BridgeServer | None = None
        self._mame: MameProcess | None = None
        self._state = None       # GameState of the tick we owe a reply for
        self._ticks = 0
        self._has_start_state = False

    # -- Gymnasium API ---------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if self._server is None:
            self._launch()
        if not self._has_start_state:
            self._advance_to_play()
            msg = self._server.command(CMD_SAVE, self.tick_timeout_s)
            self._has_start_state = True
        else:
            msg = self._server.command(CMD_LOAD, self.tick_timeout_s)
        self._state = decode_ram(msg.ram)
        self._ticks = 0
        obs = encode_state(self._state)
        return obs, self._info(self._state)

    def step(self, action):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        if not self.action_space.contains(int(action)):
            raise ValueError(f"action must be an int in 0..{NUM_ACTIONS - 1}, got {action!r}")
        a = decode_action(int(action))
        prev = self._state
        self._server.reply(CMD_ACT, a.fire, a.zap, a.spinner)
        state = self._next_decision_tick(prev)
        died = not bool(state.player_alive)
        reward = game_reward(int(state.score) - int(prev.score), died, self.reward_cfg)
        self._state = state
        self._ticks += 1
        terminated = died
        truncated = not terminated and self._ticks >= self.max_episode_ticks
        obs = encode_state(state, prev)
        info = self._info(state)
        info["shaping"] = 0.0 if died else self.reward_cfg.survival_bonus
        return obs, reward, terminated, truncated, info

    def close(self):
        if self._server is not None:
            try:
                self._server.reply(CMD_EXIT)
            except BridgeClosed:
                pass
            self._server.close()
            self._server = None
        if self._mame is not None:
            self._mame.stop(grace_s=3.0)
            self._mame = None
        self._has_start_state = False
        self._state = None

    @property
    def game_state(self):
        """The GameState behind the latest observation (what the expert policy reads)."""
        return self._state

    # -- internals -----------------------------------------------------------------------------
    def _launch(self) -> None:
        self._server = BridgeServer()
        self._mame = MameProcess(self.rompath, self._server.port, mame=self.mame_binary,
                                 reply_fifo=self._server.reply_fifo)
        self._mame.start()
        self._server.accept(60.0)

    def _advance_to_play(self):
        """Reply neutrally until the start of play (`is_start_of_play`; the bridge navigates)."""
        self._server.reply(CMD_ACT)
        for _ in range(100_000):
            msg = self._server.receive(self.tick_timeout_s)
            if is_start_of_play(msg.ram):
                return msg
            self._server.reply(CMD_ACT)
        raise RuntimeError("the game never reached play")

    def _next_decision_tick(self, prev):
        """Next tick in play/zoom, or the death edge; non-play ticks get a neutral reply."""
        while True:
            msg = self._server.receive(self.tick_timeout_s)
            s = decode_ram(msg.ram)
            if not bool(s.player_alive) or bool(s.in_play):
                return s
            self._server.reply(CMD_ACT)

    @staticmethod
    def _info(s) -> dict:
        return {"score": int(s.score), "lives": int(s.lives), "level": int(s.level),
                "gamestate": int(s.gamestate)}

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


ENV_ID = "TempestMAME-v0"
if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="services.emulator.gym_env:TempestEnv")
