"""Record RAM of consecutive game ticks from real MAME into an .npz (test snapshots).

    python -m services.emulator.record_ram OUT.npz --ticks 3000 [--seed 0]

Plays with a seeded random policy (fire 90%, spinner -6/0/+6) and saves uint8[ticks, 1024] as
`ram`.  tests/data/ram_ticks.npz was made with this tool from ranges of one such recording.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from .bridge import CMD_ACT, CMD_EXIT, BridgeServer
from .mame_process import MameProcess


def record(rompath: str, ticks: int, seed: int = 0) -> np.ndarray:
    server = BridgeServer()
    mame = MameProcess(rompath, server.port, reply_fifo=server.reply_fifo)
    mame.start()
    rng = np.random.default_rng(seed)
    rams = []
    try:
        server.accept(60)
        server.reply()
        while len(rams) < ticks:
            msg = server.receive(10)
            server.reply(CMD_ACT, fire=rng.random() < 0.9, spinner=int(rng.choice([-6, 0, 6])))
            rams.append(msg.ram)
        server.receive(10)
        server.reply(CMD_EXIT)
    finally:
        mame.stop()
        server.close()
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
