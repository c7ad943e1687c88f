"""Tempest's RAM, by name: every address the project reads or writes (rev 1 ROM, `tempest1`).

The one place for RAM knowledge: `game_state.py` decodes GameStates from these names, the game
session classifies ticks with them, and `services/emulator/lua/bridge.lua` repeats the few it
needs under the same names (a unit test checks the two agree).  Addresses cover $0000-$03FF, the
1024 bytes the bridge sends per tick.
"""
from __future__ import annotations

import numpy as np

RAM_SIZE = 0x400

# -- game flow ----------------------------------------------------------------------------------
MODE = 0x0000               # the game's mode byte (MODE_* below)
TICK = 0x0003               # game tick counter: changes once per game tick
GAME_FLAGS = 0x0005         # bit 7 set while a game runs (clear in attract mode)
CREDITS = 0x0006            # the bridge writes 2 every frame: free play
SCORE = 0x0040              # 3 bytes BCD, low byte first
LIVES = 0x0048
BUTTONS = 0x004D            # bit 4 fire pressed, bit 3 superzapper pressed
SPINNER = 0x0050            # spinner delta this frame (the bridge writes the action's speed)
LEVEL = 0x009F              # 0-based level number
PLAYER_LANE = 0x0200        # low nibble
PLAYER_STATE = 0x0201       # bit 7 set from the death edge on (the player is dying or dead)
PLAYER_DEPTH = 0x0202

MODE_PLAY, MODE_ZOOM, MODE_LEVEL_SELECT, MODE_HIGH_SCORE = 0x04, 0x20, 0x16, 0x12
GAME_RUNNING_BIT = 0x80
PLAYER_DEAD_BIT = 0x80

# -- tube, enemies, shots (per slot or per lane) -------------------------------------------------
PULSAR_FLIP_RATE = 0x00B2
ENEMIES_IN_TUBE = 0x0108
ENEMIES_ON_RIM = 0x0109
TUBE_OPEN = 0x0111          # 0xFF on open tubes (no wrap-around)
ZAPPER_RUNNING = 0x0125     # non-zero while the superzapper's effect runs
SHOTS_IN_FLIGHT = 0x0135
SPAWN_SLOTS = 0x013D        # 5, per enemy type
ACTIVE_PER_TYPE = 0x0142    # 5, per enemy type
PULSAR_BEAT = 0x0147
PULSING = 0x0148            # pulsars lethal in their lane while 0x01-0x7F
ENEMY_TYPE = 0x0283         # 7 slots: bits 0-2 type, bit 7 flipping, bit 6 lane increasing
ENEMY_FLAGS = 0x028A        # 7 slots: bit 7 moving away, bit 6 can shoot
PLAYER_SHOT_LANE = 0x02AD   # 8
ENEMY_SHOT_LANE = 0x02B5    # 4
ENEMY_LANE = 0x02B9         # 7, low nibble
ENEMY_FLIP_ANGLE = 0x02CC   # 7
PLAYER_SHOT_DEPTH = 0x02D3  # 8 (0 = no shot)
ENEMY_SHOT_DEPTH_HI = 0x02DB  # 4, 8.8 fixed point with ENEMY_SHOT_DEPTH_LO
ENEMY_DEPTH = 0x02DF        # 7 (0 = empty slot, 0x10 = at the rim)
ENEMY_SHOT_DEPTH_LO = 0x02E6  # 4
ZAPS_USED = 0x03AA          # superzapper uses this level (2 allowed)
ENEMIES_TO_SPAWN = 0x03AB
SPIKE_HEIGHTS = 0x03AC      # 16 lanes (0 = no spike, else the depth of its tip)
TUBE_ANGLES = 0x03EE        # 16 lanes, angle 0-15


def bcd_score(ram: np.ndarray) -> np.ndarray:
    """The score from RAM of any leading batch shape: uint8[..., 1024] -> int64[...]."""
    b = np.asarray(ram)[..., SCORE:SCORE + 3].astype(np.int64)
    digits = (b >> 4) * 10 + (b & 0x0F)
    return digits[..., 0] + digits[..., 1] * 100 + digits[..., 2] * 10000
