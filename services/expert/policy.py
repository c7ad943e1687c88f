"""The expert: a pure, rule-based Tempest policy, vectorised over a batch of GameStates.

    actions = expert_actions(states, ticks_since_zap=None)   # int16[B] joint action indices
    action = expert_action(state)                            # one unbatched state -> int

No I/O; numpy only; no Python loop over the batch.  Lane distances are measured from the
PLAYER's lane, signed, wrapping (+-8) on closed tubes and not on open ones.  The rules, in order:

0. Outside play/zoom (mode not 0x04/0x20), or while the player is dying: NOOP.
1. Zoom (0x20): steer to the nearest lane without a spike; if every lane has one, to the lane
   with the shortest spike (largest tip depth); fire.
2. Danger (play).  Threats: a flipper, or a pulsar while pulsars are lethal, at depth <= 0x60
   (a flipping enemy also threatens the lane it flips toward); an enemy shot whose depth high
   byte is <= 0x60; each threatens its lane +-1.  A fuseball at depth <= 0x30 threatens +-2
   lanes (keep 3 lanes away), and a lethal pulsar's whole lane is deadly at any depth.
   If threatened, step one lane away (speed 9) to a side that is not threatened, not a wall
   (open tubes: no step past lane 0 or 15) and not deadly (a lethal pulsar's lane, an enemy at
   the rim); with both sides open (own-lane threat only), the side with fewer threats two lanes
   out (ties: +1 lane).  No side open: stay, fire as rule 4 allows, and superzap if the own lane
   is the threatened one and a zap is allowed.
3. Hunt.  Blocked lanes: any lane threatened as in 2, a lethal pulsar's lane, a lane holding an
   enemy at the rim (depth <= 0x10).  Targets: enemies not in a blocked lane, ranked fuseball >
   flipper > tanker > spiker > pulsar; the best rank wins, then the shortest path.  A path may
   not cross a blocked lane; on a closed tube it takes the short way round unless only the
   long way is clear.  Speed grows with the path length: 1 -> 3, 2-3 -> 6, 4-5 -> 9,
   6+ -> 12; 0 (or nothing reachable) -> stay.
4. Fire (play) only when a shot slot is free -- shots_in_flight < 8 and fewer than 8 player shot
   depths are non-zero -- and the shot is worth it, so that slots stay free for the enemy that
   flips into the player's lane at the rim (a shot fired as it lands kills it; with all 8 shots
   flying down empty lanes it kills the player).  An enemy is ON the player's lane when its lane
   is the player's, or it is flipping down into it: a flipping enemy's lane byte is the higher
   lane of the pair it flips between, so with the lane-increasing bit clear it flips from its
   lane into lane - 1 (mod 16).  Fire if
     - urgent: an enemy on the player's lane at depth <= URGENT_DEPTH (0x20), or an enemy shot in
       the player's lane with depth high byte <= URGENT_SHOT_DEPTH (0x30): any free slot;
     - a target: an enemy on the player's lane at any depth, and shots_in_flight < TARGET_FIRE_SHOTS;
     - else (an empty lane) only while shots_in_flight < FREE_FIRE_SHOTS.
   Zoom: fire whenever a shot slot is free.
5. Superzapper (play only): zaps_used == 0 and >= 3 enemies at depth <= 0x20, or zaps_used == 1
   and >= 1 enemy at depth <= 0x10 (or trapped, rule 2); never with zaps_used >= 2, while the
   zapper runs, or before ZAP_COOLDOWN_TICKS since the last zap when ticks_since_zap is given.

Spinner sign: SPIN_SIGN * speed is the lane direction.  The bridge writes the spinner value to
$0050 each frame; in tests/data/ram_ticks.npz every tick that shows $0050 = +6 has the player
position $0051 moving -6 (lane -1), and -6 moves it +6 (lane +1).  So a positive spinner value
DECREASES the lane number: SPIN_SIGN = -1 (tests/unit/test_expert_policy.py checks this).

Implementation: the service calls this once per request, so the cost that matters is numpy's
per-call overhead (~1 us a call), not arithmetic.  Everything that does not depend on the batch is
folded into lookup tables built once at import, and sets of lanes are 16-bit masks, so a request
is ~80 small numpy calls (~60 us for 32 states) instead of ~150 calls over [B, 18, 16] arrays.
tests/unit/test_expert_policy_reference.py checks the actions against the original, direct
implementation of the rules above.
"""
from __future__ import annotations

import numpy as np

from tempest_common.actions import NOOP, NUM_SPINNER, SPINNER_SPEEDS, ZAP_COOLDOWN_TICKS, ZAP_USES_PER_LEVEL
from tempest_common.game_state import (ENEMY_FLIPPER, ENEMY_FUSEBALL, ENEMY_PULSAR, ENEMY_SPIKER, ENEMY_TANKER,
                                       MODE_PLAY, MODE_ZOOM, NUM_ENEMY_SLOTS, NUM_LANES, RIM_DEPTH, GameState)

SPIN_SIGN = -1            # lane direction of a positive spinner value (see the module docstring)
DANGER_DEPTH = 0x60       # flippers / lethal pulsars / enemy shots this close threaten +-1 lane
FUSEBALL_DEPTH = 0x30     # fuseballs this close threaten +-FUSEBALL_RADIUS lanes
FUSEBALL_RADIUS = 2
DODGE_SPEED = 9
ZAP_NEAR_DEPTH = 0x20     # first zap: >= ZAP_FIRST_COUNT enemies this close
ZAP_FIRST_COUNT = 3
MAX_SHOTS = 8
URGENT_DEPTH = 0x20       # an enemy this close on the player's lane: fire with any free slot
URGENT_SHOT_DEPTH = 0x30  # an enemy shot this close (depth high byte) in the player's lane: likewise
TARGET_FIRE_SHOTS = 6     # an enemy on the player's lane: fire while fewer shots than this fly
FREE_FIRE_SHOTS = 4       # nothing on the player's lane: fire while fewer shots than this fly

# hunting rank per enemy type (lower = hunted first); types 5-7 (unknown) last
_RANK = np.array([1, 4, 2, 3, 0, 5, 5, 5], np.int64) * 64
assert _RANK[ENEMY_FUSEBALL] < _RANK[ENEMY_FLIPPER] < _RANK[ENEMY_TANKER] < _RANK[ENEMY_SPIKER] < _RANK[ENEMY_PULSAR]
_NONE = 1 << 20           # "no path"

# ---- lane geometry: [open (0 closed, 1 open), from lane, to lane] ----------------------------
_L = np.arange(NUM_LANES)
_D = _L[None, :] - _L[:, None]
_DIST = np.stack([((_D + 8) & 15) - 8, _D])   # signed distance from -> to, as lane_distance
_WALL = -1                                     # "neighbour" past the end of an open tube


def _neighbour(op: int, lane: int, step: int) -> int:
    n = lane + step
    return n & 15 if not op else (n if 0 <= n < NUM_LANES else _WALL)


# signed lane distance (offset 16) -> spinner index; speed 0, 3, 6, 6, 9, 9, then 12
_SPEED_BY_DIST = np.array([0, 3, 6, 6, 9, 9] + [12] * 11)
_SPIN_BY_D = np.full(33, NOOP % NUM_SPINNER, np.int64)
for _d in range(-16, 17):
    _SPIN_BY_D[_d + 16] = int(np.flatnonzero(SPINNER_SPEEDS == SPIN_SIGN * np.sign(_d) * _SPEED_BY_DIST[abs(_d)])[0])
_SPIN_DODGE = _SPIN_BY_D[16] + np.array([0, 0, 0])  # index by dodge + 1
for _d in (-1, 1):
    _SPIN_DODGE[_d + 1] = int(np.flatnonzero(SPINNER_SPEEDS == SPIN_SIGN * _d * DODGE_SPEED)[0])

# ---- per enemy slot: index e = lethal << 16 | type byte << 8 | depth byte ----------------------
# (every type and depth byte has an entry, so odd bytes from the wire behave as in the plain rules)
_LETHAL_OFF = np.where((np.arange(256) - 1) % 256 < 0x7F, 1 << 16, 0)   # pulsing byte -> offset
_lethal, _etype, _edepth = np.indices((2, 256, 256)).reshape(3, -1)
_present = _edepth != 0
_lp = (_etype == ENEMY_PULSAR) & _present & (_lethal == 1)                 # a lethal pulsar
_near1 = ((_etype == ENEMY_FLIPPER) & _present | _lp) & (_edepth <= DANGER_DEPTH)
_fuse = (_etype == ENEMY_FUSEBALL) & _present & (_edepth <= FUSEBALL_DEPTH)
_rim = _present & (_edepth <= RIM_DEPTH)
# A threat "kind" is hard * 8 + shape.  hard: the enemy's lane is deadly (lethal pulsar, enemy at
# the rim).  shape: 0 none, 1 a lethal pulsar beyond DANGER_DEPTH (deadly in its own lane only, no
# threat radius), 2 threatens +-1 lane, 3 +-FUSEBALL_RADIUS lanes, 4 / 5 as 2 and flipping toward
# the lane below / above (which it also threatens +-1).  Shapes 4/5 are set from the flip bits.
# The full kind adds, for the fire rule (4): bits 4-5 fire class (0 none, 1 present, 2 present at
# depth <= URGENT_DEPTH: urgent) and bit 6 "flipping down" (between lanes, lane-increasing bit
# clear: it flips into its lane - 1, which it is then also on).
_E_KIND4 = ((_lp | _rim) * 8 + np.select([_fuse, _near1, _lp], [3, 2, 1], 0)
            + np.where(_present, np.where(_edepth <= URGENT_DEPTH, 32, 16), 0)) * 4
_k, _between, _inc = np.arange(256) >> 2, (np.arange(256) >> 1) & 1, np.arange(256) & 1
_FLIP_KIND = (np.where(((_k & 7) == 2) & (_between == 1), _k + 2 + _inc, _k)   # [kind4 | between << 1 | inc]
              + (_between & (1 - _inc)) * 64)
_sd = (np.arange(1 << 16) - 1) % (1 << 16)                                 # shot depth - 1 (none: 65535)
_SHOT_KIND = np.where(_sd < ((DANGER_DEPTH + 1) << 8) - 1, 2, 0) + np.where(_sd < ((URGENT_SHOT_DEPTH + 1) << 8) - 1, 32, 0)
# hunting key, ordered as the rules: (rank + |path|) * 256 + slot * 32 + path + 16 -- so a single
# min over the slots picks the best target (first slot on ties) and its low 5 bits are its path.
_E_RANK = np.where(_present, _RANK[_etype & 7] * 256, 1 << 21)            # absent: never a target
_SLOT = np.arange(NUM_ENEMY_SLOTS) * 32
_NO_TARGET = _NONE + 16                                                    # low bits: path 0 (stay)
# superzapper counts, summed over the slots: enemies within ZAP_NEAR_DEPTH + 8 * enemies at the rim
_E_ZAPC = (_present & (_edepth <= ZAP_NEAR_DEPTH)) + _rim * 8

# ---- per threat: index t = ((open * 16 + player lane) * 16 + threat lane) * 128 + full kind -----
# _T_MASK, OR-ed over all threats (and _ROW_BITS, the walls): bits 0-30 the lanes blocked
# (threatened +-radius, or deadly) in a window around the player -- bit 15 + r = the lane r steps
# away, r = -15..15; on a closed tube a lane is both r and r - 16 steps away -- and bits 32-38
# flags about the player's lane (37, 38: an enemy / an urgent one on it, for the fire rule).
# _T_COST: +1 / -1 per threat two lanes up / down.
_F_LEFT, _F_RIGHT, _F_OWN, _F_HARD_M, _F_HARD_P, _F_TARGET, _F_URGENT = (1 << b for b in range(32, 39))
_WBIT = np.zeros((2, NUM_LANES, NUM_LANES), np.int64)        # [open, player lane, lane] -> window bits
for _op, _pl, _j in np.ndindex(_WBIT.shape):
    _r = (_j - _pl) & 15 if not _op else _j - _pl
    _WBIT[_op, _pl, _j] = (1 << (15 + _r)) | ((1 << (_r - 1)) if not _op and _r else 0)
_within = [[[sum(1 << j for j in range(16) if abs(_DIST[op, lane, j]) <= r) for r in range(3)]
            for lane in range(16)] for op in (0, 1)]                       # lanes within r of lane
_T_LANES = np.zeros((2, NUM_LANES, NUM_LANES, 16), np.int64)               # blocked lanes, bit = lane
_T_FLAGS = np.zeros_like(_T_LANES)
_T_COST = np.zeros_like(_T_LANES)
for _op, _pl, _lane, _kind in np.ndindex(_T_LANES.shape):
    _shape, _dist = _kind & 7, _DIST[_op, _pl].tolist()
    _threats = {2: [(_lane, 1)], 3: [(_lane, FUSEBALL_RADIUS)], 4: [(_lane, 1), ((_lane - 1) & 15, 1)],
                5: [(_lane, 1), ((_lane + 1) & 15, 1)]}.get(_shape, [])
    _lanes, _flags = 0, _F_OWN if _shape == 1 and _lane == _pl else 0
    for _tl, _r in _threats:
        _td = _dist[_tl]                                                   # player -> threat lane
        _lanes |= _within[_op][_tl][_r]
        if abs(_td) <= _r:
            _flags |= _F_LEFT if _td < 0 else _F_RIGHT if _td > 0 else _F_OWN
        _T_COST[_op, _pl, _lane, _kind] += (_td == 2) - (_td == -2)
    if _kind & 8:
        _lanes |= 1 << _lane
        _flags |= (_F_HARD_M if _lane == _neighbour(_op, _pl, -1) else 0) | (_F_HARD_P if _lane == _neighbour(_op, _pl, 1) else 0)
    _T_LANES[_op, _pl, _lane, _kind], _T_FLAGS[_op, _pl, _lane, _kind] = _lanes, _flags
_T_MASK = _T_FLAGS + (((_T_LANES[..., None] >> _L) & 1) * _WBIT[:, :, None, None, :]).sum(axis=-1)
# the fire flags, over the full kinds (the base kind is kind & 15)
_op, _pl, _lane, _kind = np.indices((2, NUM_LANES, NUM_LANES, 128))
_on = (_lane == _pl) | ((_kind >> 6 == 1) & ((_lane - 1) & 15 == _pl))      # enemy on the player's lane
_fc = (_kind >> 4) & 3
_T_MASK = (_T_MASK[_op, _pl, _lane, _kind & 15] + np.where(_on & (_fc >= 1), _F_TARGET, 0)
           + np.where(_on & (_fc == 2), _F_URGENT, 0)).ravel()
_T_COST = _T_COST[_op, _pl, _lane, _kind & 15].ravel()
_ROW_BITS = np.array([sum(1 << (15 + r) for r in range(-15, 16) if op and not 0 <= pl + r < NUM_LANES)
                      | (_F_HARD_M if _neighbour(op, pl, -1) == _WALL else 0)
                      | (_F_HARD_P if _neighbour(op, pl, 1) == _WALL else 0) for op in (0, 1) for pl in _L])

# ---- dodging: index dk = left | right << 1 | own << 2 | hard below << 3 | hard above << 4
#      | target << 5 | urgent << 6 | (cost above <= cost below) << 7;  _SPIN_PLAY[dk, hunt path + 16]
#      is the spinner (target / urgent are for _FIRE) ---------------------------------------------
_left, _right, _own, _hard_m, _hard_p, _target, _urgent, _cheap_p = (((np.arange(256) >> b) & 1) == 1 for b in range(8))
_ok_m, _ok_p = ~_left & ~_hard_m, ~_right & ~_hard_p
_dodge = np.where(_ok_p & (~_ok_m | _cheap_p), 1, np.where(_ok_m, -1, 0))
_SPIN_PLAY = np.where((_left | _right | _own)[:, None], _SPIN_DODGE[_dodge + 1][:, None], _SPIN_BY_D[None, :32])
_TRAPPED = (_own & (_dodge == 0)) << 14                                    # zap index bit
# fire (play): _FIRE[dk << 8 | shots_in_flight], and a shot depth slot must be free as well
_n = np.arange(256)
_FIRE = ((_n[None, :] < MAX_SHOTS) & (_urgent[:, None] | _target[:, None] & (_n[None, :] < TARGET_FIRE_SHOTS)
                                       | (_n[None, :] < FREE_FIRE_SHOTS))).ravel()

# ---- hunting: how far the player can move before a blocked lane (or wall) in the window -------


def _free_steps(bits: np.ndarray, order) -> np.ndarray:
    """Number of 0 bits of `bits` before the first 1, taking bits in `order`."""
    n, free = np.zeros(len(bits), np.int64), np.ones(len(bits), bool)
    for b in order:
        free &= ((bits >> b) & 1) == 0
        n += free
    return n


_REACH_P = _free_steps(np.arange(1 << 15), range(15)) * 512                 # [window >> 16 & 0x7FFF]
_REACH_M = _free_steps(np.arange(1 << 16), range(14, -1, -1)) * 32 + (np.arange(1 << 16) >> 15) * 16  # [window & 0xFFFF]
# path to an enemy in lane el: index (((open * 16 + player lane) * 16 + reach up) * 16 + reach down)
# * 2 + own lane blocked) * 16 + el.  The short way if clear, else the long way round (closed tubes),
# else none; a lane it passes or ends in is free, except the own lane (path 0), hence that bit.
_op, _pl, _rp, _rm, _ob, _el = np.indices((2, NUM_LANES, NUM_LANES, NUM_LANES, 2, NUM_LANES)).reshape(6, -1)
_d = _DIST[_op, _pl, _el]
_alt = np.where((_op == 0) & (_d != 0), _d - 16 * np.sign(_d), _NONE)


def _clear(p: np.ndarray) -> np.ndarray:
    return np.where(p > 0, p <= _rp, -p <= _rm)


_path = np.where(_clear(_d), _d, np.where(_clear(_alt), _alt, _NONE))
_path[(_d == 0) & (_ob == 1)] = _NONE
_PATH_KEY = np.where(_path == _NONE, _NO_TARGET, np.abs(_path) * 256 + _path + 16)

# ---- superzapper: index trapped << 14 | zaps used << 6 | summed _E_ZAPC --------------------------
_t, _z, _s = np.indices((2, 256, 64)).reshape(3, -1)
_ZAP = (((_z == 0) & ((_s & 7) >= ZAP_FIRST_COUNT)) | ((_z == 1) & (_s >= 8)) | (_t == 1)) & (_z < ZAP_USES_PER_LEVEL)

# ---- zoom: the lane minimising _ZOOM_SPIKE[spike height] + _ZOOM_TIE[open * 16 + player lane] --------
# A free lane (0) beats any spiked one (>= 2^17); with none free, the shortest spike (largest tip
# depth) wins; ties go to the nearest lane, then the lowest lane number (low 4 bits: the lane).
_ZOOM_SPIKE = np.where(np.arange(256) == 0, 0, (1 << 17) + ((256 - np.arange(256)) << 9))
_ZOOM_TIE = (np.abs(_DIST) * 16 + _L).reshape(32, 16)
_ZOOM_SPIN = _SPIN_BY_D[_DIST + 16].reshape(32, 16)
del _T_LANES, _T_FLAGS, _on, _fc, _kind, _lane, _sd, _n, _j, _r, _lethal, _etype, _edepth, _present, _lp, _near1, _fuse, _rim, _op, _pl, _rp, _rm, _ob, _el, _d, _alt, _path, _t, _z, _s


def expert_actions(states: GameState, ticks_since_zap: np.ndarray | None = None) -> np.ndarray:
    """Joint action index (int16[B]) per state of a batched GameState (leading dim B)."""
    gs = states.mode
    B = gs.shape[0]
    play = gs == MODE_PLAY
    zoom = gs == MODE_ZOOM
    pl = states.player_lane & 15
    row = states.tube_open * 16 + pl                       # (open, player lane) row of the tables

    if not play.any():
        spin, zap = np.full(B, _SPIN_BY_D[16]), np.zeros(B, bool)
        fire = states.shots_in_flight < MAX_SHOTS
    else:
        # -- enemies classified by one lookup; threats (enemy slots, then enemy shots) as indices
        e = (states.enemy_type.astype(np.intp) << 8 | states.enemy_depth) + _LETHAL_OFF[states.pulsing][:, None]
        kind = _FLIP_KIND[_E_KIND4[e] + states.enemy_between_lanes * 2 + states.enemy_lane_increasing]
        lanes = np.concatenate([states.enemy_lane, states.enemy_shot_lane], axis=1, dtype=np.intp) & 15
        elane = lanes[:, :NUM_ENEMY_SLOTS]
        t = (lanes << 7 | np.concatenate([kind, _SHOT_KIND[states.enemy_shot_depth]], axis=1)) + (row * 2048)[:, None]
        w = np.bitwise_or.reduce(_T_MASK[t], axis=1) | _ROW_BITS[row]   # blocked window | flags
        cheap_p = np.add.reduce(_T_COST[t], axis=1) <= 0                 # (bool * 32: bool << 5 is slower)
        dk = (w >> 32) + cheap_p * 128                                   # the dodging / fire index

        # -- hunt: free steps each way from the blocked-lane window (_PATH_KEY's index, less the
        # enemy lane), then one key per slot
        reach = row * 8192 + _REACH_P[(w >> 16) & 0x7FFF] + _REACH_M[w & 0xFFFF]
        key = _PATH_KEY[reach[:, None] + elane] + _E_RANK[e] + _SLOT
        hunt = np.minimum(np.minimum.reduce(key, axis=1), _NO_TARGET) & 31   # path + 16
        spin = _SPIN_PLAY[dk, hunt]
        fire = _FIRE[dk << 8 | states.shots_in_flight]

        # -- superzapper
        zi = _TRAPPED[dk] | (states.zaps_used.astype(np.intp) << 6) | np.add.reduce(_E_ZAPC[e], axis=1)
        zap = _ZAP[zi] & play & ~states.zapper_running
        if ticks_since_zap is not None:
            zap &= np.broadcast_to(np.asarray(ticks_since_zap), (B,)) >= ZAP_COOLDOWN_TICKS

    if zoom.any():
        zkey = _ZOOM_SPIKE[states.spike_heights] + _ZOOM_TIE[row]
        spin = np.where(zoom, _ZOOM_SPIN[row, np.minimum.reduce(zkey, axis=1) & 15], spin)
        fire = np.where(zoom, states.shots_in_flight < MAX_SHOTS, fire)

    # a shot slot is free unless 8 are in flight (in fire) or all 8 shot depths are non-zero
    fire &= np.minimum.reduce(states.player_shot_depth, axis=1) == 0
    action = (fire + 2 * zap) * NUM_SPINNER + spin
    return np.where((play | zoom) & states.player_alive, action, NOOP).astype(np.int16)


def expert_action(state: GameState) -> int:
    """Joint action index for one unbatched GameState."""
    return int(expert_actions(GameState.stack([state]))[0])
