"""Evaluate policies on the real game, life by life, from the same seeded starts.

    python -m services.emulator.evaluate POLICY [POLICY ...] [--lives 30] [--seed 0] [--max-ticks 4000]
                                         [--epsilon E] [--jobs N] [--expert-addr URL] [--video OUT.mng]

POLICY is a learner checkpoint (the network, epsilon-greedy with the evaluation epsilon: the
checkpoint's own unless --epsilon), `expert` (the expert service: started here on a loopback port
unless --expert-addr) or `random` (uniform over the 44 actions).  Life i of every policy starts
from the same point: the save state at the start of play (first level), then a no-op offset of
0-30 ticks drawn from --seed.  Every policy plays by the worker's rules (GameSession: the
superzapper gate for all).  A life ends at its death edge, or is capped after --max-ticks
decision ticks (its points so far count).  Prints one line per life, a table (mean points per
life, 95% confidence interval, mean level reached, capped lives) and, last, one JSON line.
--jobs N plays on N MAMEs at once; the results do not depend on N.  --video records the first
life of the first policy with MAME's recorder (.mng or .avi) and stops.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from tempest_common.actions import NOOP, NUM_ACTIONS
from tempest_common.game_state import decode_ram
from tempest_common.network import CHECKPOINT_FORMAT_VERSION, network_from_state_dict
from tempest_common.state_vector import STATE_SIZE

from ..expert.client import ExpertClient, start_local_expert
from .mame_process import RomError, check_rom_dir
from .network_policy import NetworkPolicy
from .session import GameSession

NOOP_STARTS = 31   # offsets 0-30


class EvaluationError(RuntimeError):
    """A policy that cannot be evaluated (missing or foreign checkpoint, expert away): one line."""


def load_checkpoint_network(path: str) -> tuple[torch.nn.Module, dict]:
    """The online network of a checkpoint, refused with one clear line unless it fits this version."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        net = network_from_state_dict({k: v.float().numpy() for k, v in checkpoint["online"].items()})
    except FileNotFoundError:
        raise EvaluationError(f"{path}: no such checkpoint") from None
    except Exception as exc:  # a foreign or damaged file: any reader error means the same to the user
        raise EvaluationError(f"{path}: not a learner checkpoint this version can read ({exc})") from None
    version = checkpoint.get("format_version", 1)
    if not isinstance(version, int) or not 1 <= version <= CHECKPOINT_FORMAT_VERSION:
        raise EvaluationError(f"{path}: checkpoint format {version!r}, this version reads formats 1 to "
                              f"{CHECKPOINT_FORMAT_VERSION} (a newer project wrote it: evaluate it with that one)")
    if net.state_dim != STATE_SIZE or net.num_actions != NUM_ACTIONS:
        raise EvaluationError(f"{path}: its network takes {net.state_dim} inputs and {net.num_actions} actions, "
                              f"this version's {STATE_SIZE} and {NUM_ACTIONS}: it comes from another version of "
                              "the project (train a new run: RESUME=0 or another CHECKPOINT_DIR)")
    return net, checkpoint


def t975(df: int) -> float:
    """Student t quantile for a two-sided 95% interval (Cornish-Fisher; within 0.2% from df = 5)."""
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def summarize(scores: list[int]) -> tuple[float, float]:
    """(mean, half-width of its 95% confidence interval)."""
    a = np.asarray(scores, np.float64)
    return float(a.mean()), (t975(len(a) - 1) * float(a.std(ddof=1)) / np.sqrt(len(a)) if len(a) > 1 else 0.0)


class Player:
    """One policy's choice on a decision tick: act(tick, prev_ram, rng) -> joint action."""

    def __init__(self, policy: str, epsilon: float | None, expert_addr: str):
        self.policy, self.epsilon, self.net, self.expert = policy, 0.0, None, None
        if policy == "expert":
            self.expert = ExpertClient(expert_addr)
        elif policy != "random":
            self.net = NetworkPolicy("", metrics=None)
            self.net.net, checkpoint = load_checkpoint_network(policy)
            self.epsilon = checkpoint["live"]["evaluation_epsilon"] if epsilon is None else epsilon

    def act(self, tick, prev_ram, rng: np.random.Generator) -> int:
        u, random_action = rng.random(), int(rng.integers(NUM_ACTIONS))  # drawn every tick: same stream for all
        if self.expert is not None:
            actions = self.expert.act(decode_ram(tick.ram[None]), timeout_ms=10_000)
            if actions is None:
                raise EvaluationError(f"the expert at {self.expert.url} did not answer within 10 s")
            return int(actions[0])
        if self.net is None or u < self.epsilon:
            return random_action
        return self.net.act(tick.ram, prev_ram)


def play_life(session: GameSession, player: Player, noops: int, max_ticks: int, rng) -> dict:
    """One life from the saved start of play after `noops` no-op ticks; its points, level, ticks."""
    tick, prev, ticks = session.restart(), None, 0
    start_score = tick.score
    for _ in range(noops):
        session.act(NOOP)
        prev, tick = tick.ram, session.next_decision()
    while tick.decides and ticks < max_ticks:
        prev = None if session.skipped else prev
        session.act(player.act(tick, prev, rng))
        prev, ticks, tick = tick.ram, ticks + 1, session.next_decision()
    return {"score": tick.score - start_score, "level": tick.level + 1, "ticks": ticks, "capped": tick.decides}


def run_job(tasks: list[tuple[str, int, int]], args: dict) -> list[tuple[str, int, dict]]:
    """Play (policy, life, noops) tasks on one MAME of this process's own."""
    session = GameSession.launch(args["rompath"], workdir=args["workdir"], extra_args=args["extra"])
    players, out = {}, []
    try:
        for policy, life, noops in tasks:
            if policy not in players:
                players[policy] = Player(policy, args["epsilon"], args["expert_addr"])
            rng = np.random.default_rng([args["seed"], life, zlib.crc32(policy.encode())])
            result = play_life(session, players[policy], noops, args["max_ticks"], rng)
            print(f"{policy} life {life + 1}: {result['score']} points, level {result['level']}, "
                  f"{result['ticks']} ticks{' (capped)' if result['capped'] else ''}", file=sys.stderr, flush=True)
            out.append((policy, life, result))
    finally:
        session.close(grace_s=10.0)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m services.emulator.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("policies", nargs="+", metavar="POLICY", help="checkpoint file, 'expert' or 'random'")
    ap.add_argument("--lives", type=int, default=30, help="lives per policy (default 30)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the no-op starts and of random play")
    ap.add_argument("--max-ticks", type=int, default=4000, help="cap per life in decision ticks (default 4000)")
    ap.add_argument("--epsilon", type=float, default=None, help="network's random-action rate "
                    "(default: each checkpoint's evaluation_epsilon)")
    ap.add_argument("--jobs", type=int, default=1, help="MAMEs playing at once")
    ap.add_argument("--expert-addr", default="", help="a running expert service (default: start one)")
    ap.add_argument("--video", default="", help="record the first life of the first policy to this .mng or .avi")
    args = ap.parse_args(argv)
    suffix = Path(args.video).suffix.lower()
    if args.lives < 1 or args.max_ticks < 1 or args.jobs < 1 or not 0 <= (args.epsilon or 0) <= 1:
        ap.error("--lives, --max-ticks and --jobs must be at least 1, --epsilon within 0..1")
    if args.video and suffix not in (".mng", ".avi"):
        ap.error("--video must end in .mng or .avi")
    if args.video:
        args.policies, args.lives, args.jobs = args.policies[:1], 1, 1
    policies = list(dict.fromkeys(args.policies))
    expert = None
    try:
        rompath = os.environ.get("TEMPEST_ROMPATH", "")
        check_rom_dir(rompath)
        frames = {p: int(load_checkpoint_network(p)[1].get("bookkeeper", {}).get("global_frames", 0))
                  for p in policies if p not in ("expert", "random")}   # refuses a bad checkpoint before MAME starts
        if "expert" in policies and not args.expert_addr:
            expert, args.expert_addr = start_local_expert()
        results = evaluate(policies, args, rompath, suffix)
    except (RomError, RuntimeError) as exc:   # EvaluationError, and the expert service not starting
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    finally:
        if expert is not None:
            expert.terminate()
            expert.wait(10)
    print_report(policies, frames, results, args)
    return 0


def noop_starts(seed: int, lives: int) -> list[int]:
    """Life i of every policy starts with noop_starts[i] no-op ticks after the saved start of play."""
    return np.random.default_rng(seed).integers(0, NOOP_STARTS, lives).tolist()


def evaluate(policies: list[str], args, rompath: str, suffix: str) -> dict[str, list[dict]]:
    noops = noop_starts(args.seed, args.lives)
    tasks = [(p, life, int(noops[life])) for p in policies for life in range(args.lives)]
    shards = [tasks[j::args.jobs] for j in range(min(args.jobs, len(tasks)))]
    workdir = tempfile.mkdtemp(prefix="tempest-eval-")
    common = {"rompath": rompath, "seed": args.seed, "max_ticks": args.max_ticks, "epsilon": args.epsilon,
              "expert_addr": args.expert_addr,
              "extra": (f"-{suffix[1:]}write", "evaluation" + suffix) if args.video else ()}
    try:
        jobs = [dict(common, workdir=str(Path(workdir) / str(j))) for j in range(len(shards))]
        if len(shards) == 1:
            done = run_job(shards[0], jobs[0])
        else:
            with ProcessPoolExecutor(len(shards), mp_context=multiprocessing.get_context("spawn")) as pool:
                done = [r for part in pool.map(run_job, shards, jobs) for r in part]
        if args.video:
            shutil.move(str(Path(jobs[0]["workdir"]) / "snap" / ("evaluation" + suffix)), args.video)
            print(f"video of {policies[0]} life 1: {args.video}", file=sys.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results = {p: [None] * args.lives for p in policies}
    for policy, life, result in done:
        results[policy][life] = result
    return results


def print_report(policies: list[str], frames: dict, results: dict, args) -> None:
    width = max(12, *(len(p) for p in policies))
    print(f"{'policy':<{width}} {'frames':>10} {'lives':>5} {'mean':>9} {'±95%':>8} {'level':>6} {'capped':>6}")
    rows = []
    for p in policies:
        lives = results[p]
        mean, ci = summarize([r["score"] for r in lives])
        level = float(np.mean([r["level"] for r in lives]))
        capped = sum(r["capped"] for r in lives)
        shown = str(frames[p]) if p in frames else "-"
        print(f"{p:<{width}} {shown:>10} {len(lives):>5} {mean:>9.1f} {ci:>8.1f} {level:>6.2f} {capped:>6}")
        rows.append({"policy": p, "frames": frames.get(p), "mean": round(mean, 1), "ci95": round(ci, 1),
                     "mean_level": round(level, 2), "capped": capped, "scores": [r["score"] for r in lives],
                     "levels": [r["level"] for r in lives]})
    print(json.dumps({"lives": args.lives, "seed": args.seed, "max_ticks": args.max_ticks,
                      "noop_starts": noop_starts(args.seed, args.lives),
                      "policies": rows}))


if __name__ == "__main__":
    sys.exit(main())
