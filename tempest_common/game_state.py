"""`GameState`: what the Tempest game shows, decoded from RAM, un-normalised.

Every field is a numpy array; a single state has the shapes below, a batch adds a leading
dimension (the expert is vectorised over batches).  Addresses are named in `ram_map.py`.  Depths:
smaller = closer to the rim (the player's end of the tube); an enemy depth of 0 means the slot is
empty.  Lanes are 0-15 and lane 0 is a real lane.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from . import ram_map as M
from .ram_map import MODE_PLAY, MODE_ZOOM, RAM_SIZE

NUM_LANES = 16
NUM_ENEMY_SLOTS = 7
NUM_PLAYER_SHOTS = 8
NUM_ENEMY_SHOTS = 4

ENEMY_FLIPPER, ENEMY_PULSAR, ENEMY_TANKER, ENEMY_SPIKER, ENEMY_FUSEBALL = 0, 1, 2, 3, 4
ENEMY_TYPE_NAMES = ("flipper", "pulsar", "tanker", "spiker", "fuseball")
RIM_DEPTH = 0x10  # enemy depth when it has reached the rim


@dataclass(eq=False)
class GameState:
    mode: np.ndarray                 # u8   MODE: MODE_PLAY, MODE_ZOOM, MODE_LEVEL_SELECT, MODE_HIGH_SCORE, ...
    attract: np.ndarray              # bool GAME_FLAGS bit 7 clear
    tick: np.ndarray                 # u8   TICK, the game tick counter
    score: np.ndarray                # i64  SCORE, BCD
    lives: np.ndarray                # u8   LIVES
    level: np.ndarray                # u8   LEVEL (0-based)
    player_lane: np.ndarray          # u8   PLAYER_LANE low nibble
    player_alive: np.ndarray         # bool PLAYER_STATE bit 7 clear
    player_depth: np.ndarray         # u8   PLAYER_DEPTH
    tube_open: np.ndarray            # bool TUBE_OPEN == 0xFF (open tubes do not wrap around)
    tube_angles: np.ndarray          # u8[16] TUBE_ANGLES, angle per lane (0-15)
    spike_heights: np.ndarray        # u8[16] SPIKE_HEIGHTS (0 = no spike; else depth of its tip)
    enemy_type: np.ndarray           # u8[7]  ENEMY_TYPE bits 0-2
    enemy_between_lanes: np.ndarray  # bool[7] ENEMY_TYPE bit 7 (flipping)
    enemy_lane_increasing: np.ndarray  # bool[7] ENEMY_TYPE bit 6
    enemy_moving_away: np.ndarray    # bool[7] ENEMY_FLAGS bit 7
    enemy_can_shoot: np.ndarray      # bool[7] ENEMY_FLAGS bit 6
    enemy_lane: np.ndarray           # u8[7]  ENEMY_LANE (low nibble)
    enemy_depth: np.ndarray          # u8[7]  ENEMY_DEPTH (0 = empty slot, 0x10 = at the rim)
    enemy_flip_angle: np.ndarray     # u8[7]  ENEMY_FLIP_ANGLE
    player_shot_lane: np.ndarray     # u8[8]  PLAYER_SHOT_LANE
    player_shot_depth: np.ndarray    # u8[8]  PLAYER_SHOT_DEPTH (0 = no shot)
    shots_in_flight: np.ndarray      # u8     SHOTS_IN_FLIGHT
    enemy_shot_lane: np.ndarray      # u8[4]  ENEMY_SHOT_LANE
    enemy_shot_depth: np.ndarray     # u16[4] ENEMY_SHOT_DEPTH_HI/_LO (8.8; 0 = none)
    enemies_in_tube: np.ndarray      # u8     ENEMIES_IN_TUBE
    enemies_on_rim: np.ndarray       # u8     ENEMIES_ON_RIM
    spawn_slots: np.ndarray          # u8[5]  SPAWN_SLOTS available per type
    active_per_type: np.ndarray      # u8[5]  ACTIVE_PER_TYPE
    pulsar_beat: np.ndarray          # u8     PULSAR_BEAT
    pulsing: np.ndarray              # u8     PULSING (pulsars lethal in their lane while 0x01-0x7F)
    pulsar_flip_rate: np.ndarray     # u8     PULSAR_FLIP_RATE
    zaps_used: np.ndarray            # u8     ZAPS_USED superzapper uses this level (2 allowed)
    enemies_to_spawn: np.ndarray     # u8     ENEMIES_TO_SPAWN
    fire_pressed: np.ndarray         # bool   BUTTONS bit 4
    zap_pressed: np.ndarray          # bool   BUTTONS bit 3
    zapper_running: np.ndarray       # bool   ZAPPER_RUNNING != 0

    # -- derived views -------------------------------------------------------------------
    @property
    def in_play(self) -> np.ndarray:
        """Play or zoom mode (the player may be dying)."""
        return (self.mode == MODE_PLAY) | (self.mode == MODE_ZOOM)

    @property
    def pulsars_lethal(self) -> np.ndarray:
        return (self.pulsing >= 0x01) & (self.pulsing <= 0x7F)

    # -- batching ------------------------------------------------------------------------
    # (_FIELD_NAMES, set below the class, rather than dataclasses.fields(): slicing a batch is on
    # the expert client's per-request path, and fields() made it twice as slow)
    def to_arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in _FIELD_NAMES}

    @classmethod
    def stack(cls, states: list["GameState"]) -> "GameState":
        return cls(**{name: np.stack([getattr(s, name) for s in states]) for name in _FIELD_NAMES})

    def __getitem__(self, i) -> "GameState":
        return GameState(**{name: getattr(self, name)[i] for name in _FIELD_NAMES})

    def __len__(self) -> int:
        return int(self.mode.shape[0]) if self.mode.ndim else 1


_FIELD_NAMES = tuple(f.name for f in fields(GameState))


def decode_ram(ram: np.ndarray) -> GameState:
    """RAM $0000-$03FF (uint8[..., 1024], any leading batch shape) -> GameState."""
    ram = np.asarray(ram, dtype=np.uint8)
    if ram.shape[-1] != RAM_SIZE:
        raise ValueError(f"expected RAM of {RAM_SIZE} bytes, got shape {ram.shape}")
    r = lambda a, n=None: ram[..., a] if n is None else ram[..., a:a + n]  # noqa: E731
    enemy_type_byte = r(M.ENEMY_TYPE, NUM_ENEMY_SLOTS)
    enemy_flags = r(M.ENEMY_FLAGS, NUM_ENEMY_SLOTS)
    shot_depth = (r(M.ENEMY_SHOT_DEPTH_HI, 4).astype(np.uint16) << 8) | r(M.ENEMY_SHOT_DEPTH_LO, 4)
    return GameState(
        mode=r(M.MODE).copy(),
        attract=(r(M.GAME_FLAGS) & M.GAME_RUNNING_BIT) == 0,
        tick=r(M.TICK).copy(),
        score=M.bcd_score(ram),
        lives=r(M.LIVES).copy(),
        level=r(M.LEVEL).copy(),
        player_lane=r(M.PLAYER_LANE) & 0x0F,
        player_alive=(r(M.PLAYER_STATE) & M.PLAYER_DEAD_BIT) == 0,
        player_depth=r(M.PLAYER_DEPTH).copy(),
        tube_open=r(M.TUBE_OPEN) == 0xFF,
        tube_angles=r(M.TUBE_ANGLES, NUM_LANES) & 0x0F,
        spike_heights=r(M.SPIKE_HEIGHTS, NUM_LANES).copy(),
        enemy_type=enemy_type_byte & 0x07,
        enemy_between_lanes=(enemy_type_byte & 0x80) != 0,
        enemy_lane_increasing=(enemy_type_byte & 0x40) != 0,
        enemy_moving_away=(enemy_flags & 0x80) != 0,
        enemy_can_shoot=(enemy_flags & 0x40) != 0,
        enemy_lane=r(M.ENEMY_LANE, NUM_ENEMY_SLOTS) & 0x0F,
        enemy_depth=r(M.ENEMY_DEPTH, NUM_ENEMY_SLOTS).copy(),
        enemy_flip_angle=r(M.ENEMY_FLIP_ANGLE, NUM_ENEMY_SLOTS).copy(),
        player_shot_lane=r(M.PLAYER_SHOT_LANE, NUM_PLAYER_SHOTS) & 0x0F,
        player_shot_depth=r(M.PLAYER_SHOT_DEPTH, NUM_PLAYER_SHOTS).copy(),
        shots_in_flight=r(M.SHOTS_IN_FLIGHT).copy(),
        enemy_shot_lane=r(M.ENEMY_SHOT_LANE, NUM_ENEMY_SHOTS) & 0x0F,
        enemy_shot_depth=shot_depth,
        enemies_in_tube=r(M.ENEMIES_IN_TUBE).copy(),
        enemies_on_rim=r(M.ENEMIES_ON_RIM).copy(),
        spawn_slots=r(M.SPAWN_SLOTS, 5).copy(),
        active_per_type=r(M.ACTIVE_PER_TYPE, 5).copy(),
        pulsar_beat=r(M.PULSAR_BEAT).copy(),
        pulsing=r(M.PULSING).copy(),
        pulsar_flip_rate=r(M.PULSAR_FLIP_RATE).copy(),
        zaps_used=r(M.ZAPS_USED).copy(),
        enemies_to_spawn=r(M.ENEMIES_TO_SPAWN).copy(),
        fire_pressed=(r(M.BUTTONS) & 0x10) != 0,
        zap_pressed=(r(M.BUTTONS) & 0x08) != 0,
        zapper_running=r(M.ZAPPER_RUNNING) != 0,
    )


# dtype and per-state shape of every field (the wire schema).
FIELD_SPECS: dict[str, tuple[str, tuple[int, ...]]] = {
    name: (str(a.dtype), a.shape) for name, a in decode_ram(np.zeros(RAM_SIZE, np.uint8)).to_arrays().items()}


def lane_distance(from_lane, to_lane, tube_open):
    """Signed lane distance to_lane - from_lane; shortest way round (+-8) on a closed tube."""
    d = np.asarray(to_lane, np.int64) - np.asarray(from_lane, np.int64)
    wrapped = ((d + 8) % NUM_LANES) - 8
    return np.where(np.asarray(tube_open, bool), d, wrapped)
