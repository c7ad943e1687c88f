"""`GameState`: what the Tempest game shows, decoded from RAM, un-normalised.

Every field is a numpy array; a single state has the shapes below, a batch adds a leading
dimension (the expert is vectorised over batches, and the wire carries a batch as one array per
field).  Addresses are from ../shared/reference/tempest.md.  Depths: smaller = closer to the rim
(the player's end of the tube); an enemy depth of 0 means the slot is empty.  Lanes are 0-15 and
lane 0 is a real lane.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np

RAM_SIZE = 0x400
NUM_LANES = 16
NUM_ENEMY_SLOTS = 7
NUM_PLAYER_SHOTS = 8
NUM_ENEMY_SHOTS = 4

GS_PLAY, GS_ZOOM, GS_LEVEL_SELECT, GS_HIGH_SCORE = 0x04, 0x20, 0x16, 0x12
ENEMY_FLIPPER, ENEMY_PULSAR, ENEMY_TANKER, ENEMY_SPIKER, ENEMY_FUSEBALL = 0, 1, 2, 3, 4
ENEMY_TYPE_NAMES = ("flipper", "pulsar", "tanker", "spiker", "fuseball")
RIM_DEPTH = 0x10  # enemy depth when it has reached the rim


@dataclass(eq=False)
class GameState:
    gamestate: np.ndarray            # u8   $0000: 0x04 play, 0x20 zoom, 0x16 level select, 0x12 high score
    attract: np.ndarray              # bool $0005 bit 7 clear
    tick: np.ndarray                 # u8   $0003 game tick counter
    score: np.ndarray                # i64  $0040-$0042 BCD, low byte first
    lives: np.ndarray                # u8   $0048
    level: np.ndarray                # u8   $009F (0-based level number)
    player_lane: np.ndarray          # u8   $0200 low nibble
    player_alive: np.ndarray         # bool $0201 bit 7 clear
    player_depth: np.ndarray         # u8   $0202
    tube_open: np.ndarray            # bool $0111 == 0xFF (open tubes do not wrap around)
    tube_angles: np.ndarray          # u8[16] $03EE-$03FD angle per lane (0-15)
    spike_heights: np.ndarray        # u8[16] $03AC-$03BB (0 = no spike; else depth of its tip)
    enemy_type: np.ndarray           # u8[7]  $0283-$0289 bits 0-2
    enemy_between_lanes: np.ndarray  # bool[7] $0283-$0289 bit 7 (flipping)
    enemy_lane_increasing: np.ndarray  # bool[7] $0283-$0289 bit 6
    enemy_moving_away: np.ndarray    # bool[7] $028A-$0290 bit 7
    enemy_can_shoot: np.ndarray      # bool[7] $028A-$0290 bit 6
    enemy_lane: np.ndarray           # u8[7]  $02B9-$02BF (low nibble)
    enemy_depth: np.ndarray          # u8[7]  $02DF-$02E5 (0 = empty slot, 0x10 = at the rim)
    enemy_flip_angle: np.ndarray     # u8[7]  $02CC-$02D2
    player_shot_lane: np.ndarray     # u8[8]  $02AD-$02B4
    player_shot_depth: np.ndarray    # u8[8]  $02D3-$02DA (0 = no shot)
    shots_in_flight: np.ndarray      # u8     $0135
    enemy_shot_lane: np.ndarray      # u8[4]  $02B5-$02B8
    enemy_shot_depth: np.ndarray     # u16[4] $02DB-$02DE high, $02E6-$02E9 low (8.8; 0 = none)
    enemies_in_tube: np.ndarray      # u8     $0108
    enemies_on_rim: np.ndarray       # u8     $0109
    spawn_slots: np.ndarray          # u8[5]  $013D-$0141 spawn slots available per type
    active_per_type: np.ndarray      # u8[5]  $0142-$0146 active count per type
    pulsar_beat: np.ndarray          # u8     $0147
    pulsing: np.ndarray              # u8     $0148 (pulsars lethal in their lane while 0x01-0x7F)
    pulsar_flip_rate: np.ndarray     # u8     $00B2
    zaps_used: np.ndarray            # u8     $03AA superzapper uses this level (2 allowed)
    enemies_to_spawn: np.ndarray     # u8     $03AB
    fire_pressed: np.ndarray         # bool   $004D bit 4
    zap_pressed: np.ndarray          # bool   $004D bit 3
    zapper_running: np.ndarray       # bool   $0125 != 0

    # -- derived views -------------------------------------------------------------------
    @property
    def in_play(self) -> np.ndarray:
        """Play or zoom: the only frames that become transitions."""
        return (self.gamestate == GS_PLAY) | (self.gamestate == GS_ZOOM)

    @property
    def pulsars_lethal(self) -> np.ndarray:
        return (self.pulsing >= 0x01) & (self.pulsing <= 0x7F)

    @property
    def enemy_present(self) -> np.ndarray:
        return self.enemy_depth != 0

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.gamestate.shape

    # -- batching ------------------------------------------------------------------------
    # (_FIELD_NAMES, set below the class, rather than dataclasses.fields(): slicing a batch is on
    # the expert client's per-request path, and fields() made it twice as slow)
    def to_arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in _FIELD_NAMES}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "GameState":
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in arrays]
        if missing:
            raise ValueError(f"GameState arrays missing fields: {missing}")
        return cls(**{n: np.asarray(arrays[n], dtype=FIELD_DTYPES[n]) for n in names})

    @classmethod
    def stack(cls, states: list["GameState"]) -> "GameState":
        return cls(**{f.name: np.stack([getattr(s, f.name) for s in states]) for f in fields(cls)})

    def __getitem__(self, i) -> "GameState":
        return GameState(**{name: getattr(self, name)[i] for name in _FIELD_NAMES})

    def __len__(self) -> int:
        return int(self.gamestate.shape[0]) if self.gamestate.ndim else 1


_FIELD_NAMES = tuple(f.name for f in fields(GameState))


def _bcd(byte: np.ndarray) -> np.ndarray:
    b = byte.astype(np.int64)
    return (b >> 4) * 10 + (b & 0x0F)


def decode_bcd_score(ram: np.ndarray) -> np.ndarray:
    """$0040-$0042, BCD, low byte first."""
    return _bcd(ram[..., 0x42]) * 10000 + _bcd(ram[..., 0x41]) * 100 + _bcd(ram[..., 0x40])


def decode_ram(ram: np.ndarray) -> GameState:
    """RAM $0000-$03FF (uint8[..., 1024], any leading batch shape) -> GameState."""
    ram = np.asarray(ram, dtype=np.uint8)
    if ram.shape[-1] != RAM_SIZE:
        raise ValueError(f"expected RAM of {RAM_SIZE} bytes, got shape {ram.shape}")
    r = lambda a, n=None: ram[..., a] if n is None else ram[..., a:a + n]  # noqa: E731
    enemy_type_byte = r(0x283, 7)
    enemy_flags = r(0x28A, 7)
    shot_depth = (r(0x2DB, 4).astype(np.uint16) << 8) | r(0x2E6, 4)
    return GameState(
        gamestate=r(0x00).copy(),
        attract=(r(0x05) & 0x80) == 0,
        tick=r(0x03).copy(),
        score=decode_bcd_score(ram),
        lives=r(0x48).copy(),
        level=r(0x9F).copy(),
        player_lane=r(0x200) & 0x0F,
        player_alive=(r(0x201) & 0x80) == 0,
        player_depth=r(0x202).copy(),
        tube_open=r(0x111) == 0xFF,
        tube_angles=r(0x3EE, 16) & 0x0F,
        spike_heights=r(0x3AC, 16).copy(),
        enemy_type=enemy_type_byte & 0x07,
        enemy_between_lanes=(enemy_type_byte & 0x80) != 0,
        enemy_lane_increasing=(enemy_type_byte & 0x40) != 0,
        enemy_moving_away=(enemy_flags & 0x80) != 0,
        enemy_can_shoot=(enemy_flags & 0x40) != 0,
        enemy_lane=r(0x2B9, 7) & 0x0F,
        enemy_depth=r(0x2DF, 7).copy(),
        enemy_flip_angle=r(0x2CC, 7).copy(),
        player_shot_lane=r(0x2AD, 8) & 0x0F,
        player_shot_depth=r(0x2D3, 8).copy(),
        shots_in_flight=r(0x135).copy(),
        enemy_shot_lane=r(0x2B5, 4) & 0x0F,
        enemy_shot_depth=shot_depth,
        enemies_in_tube=r(0x108).copy(),
        enemies_on_rim=r(0x109).copy(),
        spawn_slots=r(0x13D, 5).copy(),
        active_per_type=r(0x142, 5).copy(),
        pulsar_beat=r(0x147).copy(),
        pulsing=r(0x148).copy(),
        pulsar_flip_rate=r(0xB2).copy(),
        zaps_used=r(0x3AA).copy(),
        enemies_to_spawn=r(0x3AB).copy(),
        fire_pressed=(r(0x4D) & 0x10) != 0,
        zap_pressed=(r(0x4D) & 0x08) != 0,
        zapper_running=r(0x125) != 0,
    )


class TickSummary(NamedTuple):
    """The few GameState fields episode bookkeeping needs, read straight from one tick's RAM
    (the worker's per-tick hot path; same decoding as `decode_ram`, checked by a unit test)."""
    gamestate: int
    in_play: bool
    player_alive: bool
    score: int
    lives: int
    level: int


def is_start_of_play(ram) -> bool:
    """A play tick with the player alive, a game running (not attract mode) and a life left:
    where save states for evaluation games are taken."""
    return ram[0x00] == GS_PLAY and not (ram[0x201] & 0x80) and bool(ram[0x05] & 0x80) and ram[0x48] >= 1


def summarize_tick(ram) -> TickSummary:
    gs = int(ram[0x00])
    score = (_bcd_int(ram[0x42]) * 10000 + _bcd_int(ram[0x41]) * 100 + _bcd_int(ram[0x40]))
    return TickSummary(gs, gs in (GS_PLAY, GS_ZOOM), not (int(ram[0x201]) & 0x80), score,
                       int(ram[0x48]), int(ram[0x9F]))


def _bcd_int(byte) -> int:
    b = int(byte)
    return (b >> 4) * 10 + (b & 0x0F)


# dtype and per-state shape of every field (the wire schema and from_arrays use these).
FIELD_SPECS: dict[str, tuple[str, tuple[int, ...]]] = {
    f.name: (str(v.dtype), tuple(v.shape))
    for f in fields(GameState)
    for v in [getattr(decode_ram(np.zeros(RAM_SIZE, np.uint8)), f.name)]
}
FIELD_DTYPES = {name: np.dtype(spec[0]) for name, spec in FIELD_SPECS.items()}


def lane_distance(from_lane, to_lane, tube_open):
    """Signed lane distance to_lane - from_lane; shortest way round (+-8) on a closed tube."""
    d = np.asarray(to_lane, np.int64) - np.asarray(from_lane, np.int64)
    wrapped = ((d + 8) % NUM_LANES) - 8
    return np.where(np.asarray(tube_open, bool), d, wrapped)
