"""Evaluate a learner checkpoint: N evaluation games on the real game, scores printed.

    python -m services.emulator.evaluate CHECKPOINT [--games N] [--epsilon E] [--max-ticks T]
                                         [--video OUT.mng|OUT.avi]

Every game starts from the same MAME save state, taken on the first play tick of the first
level, and is played by the network alone (epsilon-greedy with the evaluation epsilon, the
checkpoint's own by default) over all its lives, by the worker's rules (the superzapper gate
applies).  --video records one game with MAME's own
recorder (-mngwrite / -aviwrite; AVI is uncompressed, ~55 MB per emulated second) and then
stops.  The last line is a JSON summary.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from tempest_common.actions import NUM_ACTIONS
from tempest_common.network import network_from_state_dict

from .mame_process import check_rom_dir
from .network_policy import NetworkPolicy
from .session import GameSession, TickKind


def load_network(path: str):
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    weights = {k: v.float().numpy() for k, v in checkpoint["online"].items()}
    return network_from_state_dict(weights), checkpoint


def play_game(session: GameSession, policy: NetworkPolicy, epsilon: float, max_ticks: int,
              rng: np.random.Generator) -> tuple[int, int, int, bool]:
    """One game from the saved start of play to game over; returns (score, level, ticks, capped)."""
    tick, prev, ticks = session.restart(), None, 0
    while tick.kind is not TickKind.GAME_OVER and ticks < max_ticks:
        if tick.decides:
            if session.skipped:
                prev = None
            session.act(int(rng.integers(NUM_ACTIONS)) if rng.random() < epsilon else policy.act(tick.ram, prev))
            prev, ticks = tick.ram, ticks + 1
        else:
            session.pass_tick()   # a death edge with lives left
        tick = session.next_decision()
    return tick.score, tick.level + 1, ticks, tick.kind is not TickKind.GAME_OVER


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m services.emulator.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--games", type=int, default=5)
    ap.add_argument("--epsilon", type=float, default=None, help="default: the checkpoint's evaluation_epsilon")
    ap.add_argument("--max-ticks", type=int, default=50_000, help="cap per game (a game that reaches it is reported)")
    ap.add_argument("--video", default="", help="record one game to this .mng or .avi file, then stop")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.games < 1 or args.max_ticks < 1:
        ap.error("--games and --max-ticks must be at least 1")
    rompath = os.environ.get("TEMPEST_ROMPATH", "")
    check_rom_dir(rompath)
    net, checkpoint = load_network(args.checkpoint)
    epsilon = checkpoint["live"]["evaluation_epsilon"] if args.epsilon is None else args.epsilon
    policy = NetworkPolicy("", metrics=None)
    policy.net = net
    suffix = Path(args.video).suffix.lower()
    if args.video and suffix not in (".mng", ".avi"):
        ap.error("--video must end in .mng or .avi")
    extra = (f"-{suffix[1:]}write", "evaluation" + suffix) if args.video else ()   # MAME's own recorder
    args.games = 1 if args.video else args.games
    workdir = tempfile.mkdtemp(prefix="tempest-eval-")
    session = GameSession.launch(rompath, workdir=workdir, extra_args=extra)
    rng = np.random.default_rng(args.seed)
    results = []
    try:
        for game in range(args.games):
            score, level, ticks, capped = play_game(session, policy, epsilon, args.max_ticks, rng)
            results.append(score)
            print(f"game {game + 1}: {score} points, level {level}, {ticks} ticks{' (capped)' if capped else ''}",
                  flush=True)
    finally:
        session.close(grace_s=10.0)
    if args.video:
        shutil.move(str(Path(workdir) / "snap" / ("evaluation" + suffix)), args.video)
        print(f"video of game 1: {args.video}")
    shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps({"checkpoint": args.checkpoint, "games": len(results), "scores": results,
                      "mean_score": statistics.mean(results), "epsilon": epsilon}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
