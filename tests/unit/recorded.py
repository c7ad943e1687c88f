"""RAM of consecutive game ticks recorded from the real game (tools/record_ram.py).

first_lives: boot -> first play tick (index 33) -> death edge (276, score 450) -> next life.
zoom:        end of a level: play, zoom (0x20) from index 9, between-level states, next level.
game_over:   last life's death edge (13), game over, a new game starting (score back to 0).
"""
from pathlib import Path

import numpy as np

_DATA = np.load(Path(__file__).resolve().parent.parent / "data" / "ram_ticks.npz")
FIRST_LIVES = _DATA["first_lives"]
ZOOM = _DATA["zoom"]
GAME_OVER = _DATA["game_over"]
