"""Evaluate a learner checkpoint: N evaluation games on the real game, scores printed.

    python -m services.emulator.evaluate CHECKPOINT [--games N] [--epsilon E] [--max-ticks T]
                                         [--video OUT.mng|OUT.avi]

Every game starts from the same MAME save state, taken on the first play tick of the first
level, and is played by the network alone (epsilon-greedy with the evaluation epsilon, the
checkpoint's own by default) over all its lives.  --video records one game with MAME's own
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

from tempest_common.actions import ACTIONS, NUM_ACTIONS, gate_zap_one
from tempest_common.game_state import is_start_of_play, summarize_tick
from tempest_common.network import network_from_state_dict

from .bridge import CMD_ACT, CMD_EXIT, CMD_LOAD, CMD_SAVE, BridgeServer
from .mame_process import MameProcess, check_rom_dir
from .network_policy import NetworkPolicy


def load_network(path: str):
    state = torch.load(path, map_location="cpu", weights_only=True)
    weights = {k: v.float().numpy() for k, v in state["online"].items()}
    return network_from_state_dict(weights), state


def play_game(server: BridgeServer, policy: NetworkPolicy, msg, epsilon: float, max_ticks: int,
              rng: np.random.Generator) -> tuple[int, int, int, bool]:
    """From the tick `msg` (start of play) to game over; returns (score, level, ticks, capped)."""
    prev, ticks, since_zap = None, 0, 10**6
    while True:
        s = summarize_tick(msg.ram)
        if s.in_play and not s.player_alive and s.lives <= 1:
            server.reply(CMD_ACT)
            return s.score, s.level + 1, ticks, False
        if ticks >= max_ticks:
            server.reply(CMD_ACT)
            return s.score, s.level + 1, ticks, True
        if s.in_play and s.player_alive:
            action = int(rng.integers(NUM_ACTIONS)) if rng.random() < epsilon else policy.act(msg.ram, prev)
            action = gate_zap_one(int(action), int(msg.ram[0x3AA]), since_zap)
            a = ACTIONS[action]
            since_zap = 0 if a.zap else since_zap + 1
            server.reply(CMD_ACT, a.fire, a.zap, a.spinner)
            prev, ticks = msg.ram, ticks + 1
        else:
            server.reply(CMD_ACT)
            prev = None
        msg = server.receive(30)


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
    net, state = load_network(args.checkpoint)
    epsilon = state["live"]["evaluation_epsilon"] if args.epsilon is None else args.epsilon
    policy = NetworkPolicy("", metrics=None)
    policy.net = net
    workdir = tempfile.mkdtemp(prefix="tempest-eval-")
    extra = []
    if args.video:
        flag = {".mng": "-mngwrite", ".avi": "-aviwrite"}.get(Path(args.video).suffix.lower())
        if flag is None:
            ap.error("--video must end in .mng or .avi")
        extra, args.games = [flag, "evaluation" + Path(args.video).suffix.lower()], 1
    server = BridgeServer()
    mame = MameProcess(rompath, server.port, workdir, reply_fifo=server.reply_fifo, extra_args=extra)
    mame.start()
    rng = np.random.default_rng(args.seed)
    results = []
    try:
        server.accept(60)
        server.reply()
        msg = server.receive(30)
        while not is_start_of_play(msg.ram):
            server.reply()
            msg = server.receive(30)
        msg = server.command(CMD_SAVE, 30)
        for game in range(args.games):
            if game:
                msg = server.command(CMD_LOAD, 30)
            score, level, ticks, capped = play_game(server, policy, msg, epsilon, args.max_ticks, rng)
            results.append(score)
            print(f"game {game + 1}: {score} points, level {level}, {ticks} ticks{' (capped)' if capped else ''}",
                  flush=True)
            msg = server.receive(30)
        server.reply(CMD_EXIT)
    finally:
        mame.stop(grace_s=10.0)
        server.close()
    if args.video:
        shutil.move(str(Path(workdir) / "snap" / ("evaluation" + Path(args.video).suffix.lower())), args.video)
        print(f"video of game 1: {args.video}")
    shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps({"checkpoint": args.checkpoint, "games": len(results), "scores": results,
                      "mean_score": statistics.mean(results), "epsilon": epsilon}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
