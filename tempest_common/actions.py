"""The joint action space: 4 fire/zap combinations x 11 spinner speeds = 44 discrete actions.

    index = buttons * 11 + spinner_index
    buttons:        0 none, 1 fire, 2 superzapper, 3 fire + superzapper
    spinner speeds: -12 -9 -6 -3 -1 0 +1 +3 +6 +9 +12  (signed delta written to $0050 per frame;
                    positive = toward lower lane numbers, as recorded from the real game: see
                    services/expert/policy.py SPIN_SIGN)

The superzapper is gated: `gate_zap` turns a zap action into the same action without the zap
unless the level still has a use left and the cooldown since the last zap has passed.  Learners
otherwise spam it (the predecessor's experience), and a zap the game ignores is noise.

Random actions (epsilon draws, the random policy; training and evaluation alike) come from
`random_actions`: uniform over the 22 actions without the zap unless zaps are allowed
(RANDOM_ZAP, `evaluate --random-zap`).  Over all 44, half of the draws would press the zap, so a
few random ticks spend the level's two zaps as soon as the gate opens: a measure of the policy
would then mostly measure where chance spent its zaps.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

SPINNER_SPEEDS = np.array([-12, -9, -6, -3, -1, 0, 1, 3, 6, 9, 12], dtype=np.int8)
NUM_SPINNER = len(SPINNER_SPEEDS)
NUM_BUTTONS = 4
NUM_ACTIONS = NUM_BUTTONS * NUM_SPINNER
NOOP = 5  # no buttons, spinner 0
ZAP_USES_PER_LEVEL = 2
ZAP_COOLDOWN_TICKS = 60


class Action(NamedTuple):
    fire: bool
    zap: bool
    spinner: int


def encode_action(fire: bool, zap: bool, spinner_index: int) -> int:
    if not 0 <= spinner_index < NUM_SPINNER:
        raise ValueError(f"spinner_index must be 0..{NUM_SPINNER - 1}, got {spinner_index}")
    return (int(bool(fire)) | (int(bool(zap)) << 1)) * NUM_SPINNER + spinner_index


def spinner_index(speed: int) -> int:
    """Index of the listed speed closest to `speed`."""
    return int(np.argmin(np.abs(SPINNER_SPEEDS.astype(np.int64) - int(speed))))


def decode_action(index: int) -> Action:
    if not 0 <= int(index) < NUM_ACTIONS:
        raise ValueError(f"action index must be 0..{NUM_ACTIONS - 1}, got {index}")
    buttons, spin = divmod(int(index), NUM_SPINNER)
    return Action(bool(buttons & 1), bool(buttons & 2), int(SPINNER_SPEEDS[spin]))


ACTIONS = tuple(decode_action(i) for i in range(NUM_ACTIONS))   # index -> Action, for hot loops
NON_ZAP_ACTIONS = np.array([i for i, a in enumerate(ACTIONS) if not a.zap], dtype=np.int64)   # 22 of 44
ALL_ACTIONS = np.arange(NUM_ACTIONS, dtype=np.int64)


def random_actions(rng: np.random.Generator, n: int, allow_zap: bool = False) -> np.ndarray:
    """n uniform random joint actions (int64[n]): among the non-zap actions unless allow_zap."""
    pool = ALL_ACTIONS if allow_zap else NON_ZAP_ACTIONS
    return pool[rng.integers(0, len(pool), n)]


def gate_zap(index: int, zaps_used: int, ticks_since_zap: int) -> int:
    """The action without its zap unless the level has a use left and the cooldown has passed
    (plain Python: the game session calls it on MAME's critical path, every decision tick)."""
    if ACTIONS[index].zap and (zaps_used >= ZAP_USES_PER_LEVEL or ticks_since_zap < ZAP_COOLDOWN_TICKS):
        return index - 2 * NUM_SPINNER
    return index
