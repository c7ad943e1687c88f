"""Record RAM of consecutive game ticks from real MAME into an .npz (test snapshots).

    python -m tools.record_ram OUT.npz --ticks 3000 [--seed 0]

Plays with a seeded random policy (fire 90%, spinner -6/0/+6) and saves uint8[ticks, 1024] as
`ram`.  tests/data/ram_ticks.npz was made with this tool from ranges of one such recording.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from tempest_common.actions import encode_action, spinner_index

from services.emulator.session import GameSession


def record(rompath: str, ticks: int, seed: int = 0) -> np.ndarray:
    session = GameSession.launch(rompath)
    rng = np.random.default_rng(seed)
    rams = []
    try:
        while len(rams) < ticks:
            tick = session.next_tick()
            fire, spin = rng.random() < 0.9, int(rng.choice([-6, 0, 6]))  # drawn every tick: same seed, same game
            if tick.decides:
                session.act(encode_action(fire, False, spinner_index(spin)))
            else:
                session.pass_tick()
            rams.append(tick.ram)
    finally:
        session.close()
    return np.stack(rams)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--ticks", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rams = record(os.environ.get("TEMPEST_ROMPATH", ""), args.ticks, args.seed)
    np.savez_compressed(args.out, ram=rams)
    print(f"saved {len(rams)} ticks to {args.out}")


if __name__ == "__main__":
    main()
