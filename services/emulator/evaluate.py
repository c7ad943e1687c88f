"""Evaluate policies on the real game, life by life, from the same seeded starts.

    python -m services.emulator.evaluate POLICY [POLICY ...] [--lives 30] [--seed 0] [--max-ticks 4000]
                                         [--starts first|bank|all] [--bank-lives B] [--epsilon E]
                                         [--random-zap] [--jobs N]
                                         [--expert-addr URL] [--no-cache] [--video OUT.mng]

POLICY is a learner checkpoint (the network, epsilon-greedy with the evaluation epsilon: the
checkpoint's own unless --epsilon), `expert` (the expert service: started here on a loopback port
unless --expert-addr) or `random` (uniform random actions).  Random actions (epsilon, random) are
drawn among the 22 non-zap actions unless --random-zap, as in training (RANDOM_ZAP).

Suites of starts (--starts): `first`, the save state at the start of play (first level); `bank`,
the hard-start bank (start_bank.py: the first tick of levels where the expert itself dies, built
into the cache folder on first use); `all`, both.  --lives L lives are played from the start of
play and --bank-lives (default L) from each bank start, life i after a no-op offset of 0-30 ticks
drawn from --seed (no offset twice within 31 lives), and life i of every policy starts from the
same point (paired).  Every policy plays by the worker's rules (GameSession: the
superzapper gate for all).  A life ends at its death edge, or is capped after --max-ticks
decision ticks (its points so far count; a capped life is no death).

Prints one line per life on stderr, then per suite a table (eval_report.py: points per life,
points per 1,000 ticks, deaths per 10,000 ticks with intervals, levels per 1,000 ticks, capped
lives, the epsilon each policy played at, paired differences by start) and, last, one JSON line
with every life (points, ticks, capped, level reached, start level).  The expert's lives are
cached (expert_cache.py) unless --no-cache or --expert-addr.  --jobs N plays on N MAMEs at once;
the results do not depend on N.  --video records the first life of the first policy with MAME's
recorder (.mng or .avi) and stops.
"""
from __future__ import annotations

import argparse
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

from tempest_common.actions import NOOP, NUM_ACTIONS, random_actions
from tempest_common.game_state import decode_ram
from tempest_common.network import CHECKPOINT_FORMAT_VERSION, network_from_state_dict
from tempest_common.state_vector import STATE_SIZE

from ..expert.client import ExpertClient, start_local_expert
from .eval_report import print_json, report
from .expert_cache import ExpertCache
from .mame_process import RomError, check_rom_dir
from .network_policy import NetworkPolicy
from .session import START, GameSession
from .start_bank import DEFAULT_LEVELS, DEFAULT_SEEDS, load_bank, parse_ints

NOOP_STARTS = 31   # offsets 0-30
FIRST_START = "first-level start of play"


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


class Player:
    """One policy's choice on a decision tick: act(tick, prev_ram, rng) -> joint action."""

    def __init__(self, policy: str, epsilon: float | None, expert_addr: str, random_zap: bool = False):
        self.policy, self.epsilon, self.net, self.expert = policy, 0.0, None, None
        self.random_zap = random_zap
        if policy == "expert":
            self.expert = ExpertClient(expert_addr)
        elif policy == "random":
            self.epsilon = 1.0
        else:
            self.net = NetworkPolicy("", metrics=None)
            self.net.net, checkpoint = load_checkpoint_network(policy)
            self.epsilon = checkpoint["live"]["evaluation_epsilon"] if epsilon is None else epsilon

    def act(self, tick, prev_ram, rng: np.random.Generator) -> int:
        u = rng.random()   # drawn every tick, with the random action: the same stream for all policies
        random_action = int(random_actions(rng, 1, self.random_zap)[0])
        if self.expert is not None:
            actions = self.expert.act(decode_ram(tick.ram[None]), timeout_ms=10_000)
            if actions is None:
                raise EvaluationError(f"the expert at {self.expert.url} did not answer within 10 s")
            return int(actions[0])
        if self.net is None or u < self.epsilon:
            return random_action
        return self.net.act(tick.ram, prev_ram)


def play_life(session: GameSession, player: Player, noops: int, max_ticks: int, rng, slot: str = START) -> dict:
    """One life from a saved start (`slot`) after `noops` no-op ticks: points, ticks, capped, levels."""
    tick, prev, ticks = session.restart(slot), None, 0
    start_score, start_level = tick.score, tick.level + 1
    for _ in range(noops):
        if not tick.decides:   # a death within the no-op ticks: the life is over before the policy acts
            break
        session.act(NOOP)
        prev, tick = tick.ram, session.next_decision()
    while tick.decides and ticks < max_ticks:
        prev = None if session.skipped else prev
        session.act(player.act(tick, prev, rng))
        prev, ticks, tick = tick.ram, ticks + 1, session.next_decision()
    return {"points": tick.score - start_score, "ticks": ticks, "capped": tick.decides, "level": tick.level + 1,
            "start_level": start_level}


def life_line(task: dict, result: dict, cached: bool = False) -> str:
    """Today's per-life line (scripts read it), new figures after it."""
    line = (f"{task['policy']} life {task['index'] + 1}: {result['points']} points, level {result['level']}, "
            f"{result['ticks']} ticks{' (capped)' if result['capped'] else ''}")
    if task["suite"] != "first":
        line += f"; {task['suite']} {task['slot']}"
    return line + ("; cached" if cached else "")


def run_job(tasks: list[dict], args: dict) -> list[tuple[dict, dict]]:
    """Play tasks (policy, suite, index, slot, noops, rng seed) on one MAME of this process's own."""
    session = GameSession.launch(args["rompath"], workdir=args["workdir"], extra_args=args["extra"])
    players, out = {}, []
    try:
        for name, path in args["bank"]:
            session.install_state(name, Path(path).read_bytes())
        for task in tasks:
            policy = task["policy"]
            if policy not in players:
                players[policy] = Player(policy, args["epsilon"], args["expert_addr"], args["random_zap"])
            rng = np.random.default_rng(task["rng"])
            result = play_life(session, players[policy], task["noops"], args["max_ticks"], rng, task["slot"])
            print(life_line(task, result), file=sys.stderr, flush=True)
            out.append((task, result))
    finally:
        session.close(grace_s=10.0)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m services.emulator.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("policies", nargs="+", metavar="POLICY", help="checkpoint file, 'expert' or 'random'")
    ap.add_argument("--lives", type=int, default=30, help="lives per policy and start (default 30)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the no-op starts and of random play")
    ap.add_argument("--max-ticks", type=int, default=4000, help="cap per life in decision ticks (default 4000)")
    ap.add_argument("--starts", choices=("first", "bank", "all"), default="first",
                    help="start of play (first), the hard-start bank (bank) or both (all); default first")
    ap.add_argument("--bank-lives", type=int, default=0, help="lives per bank start (default: --lives)")
    ap.add_argument("--bank-levels", default=",".join(map(str, DEFAULT_LEVELS)), help="the bank's levels")
    ap.add_argument("--bank-seeds", default=",".join(map(str, DEFAULT_SEEDS)), help="the bank's expert games")
    ap.add_argument("--epsilon", type=float, default=None, help="network's random-action rate "
                    "(default: each checkpoint's evaluation_epsilon)")
    ap.add_argument("--random-zap", action="store_true", help="random actions may press the superzapper")
    ap.add_argument("--jobs", type=int, default=1, help="MAMEs playing at once")
    ap.add_argument("--expert-addr", default="", help="a running expert service (default: start one)")
    ap.add_argument("--no-cache", action="store_true", help="play the expert's lives even if cached")
    ap.add_argument("--video", default="", help="record the first life of the first policy to this .mng or .avi")
    args = ap.parse_args(argv)
    suffix = Path(args.video).suffix.lower()
    if args.lives < 1 or args.max_ticks < 1 or args.jobs < 1 or args.bank_lives < 0 or not 0 <= (args.epsilon or 0) <= 1:
        ap.error("--lives, --max-ticks and --jobs must be at least 1, --bank-lives at least 0, --epsilon within 0..1")
    args.bank_lives = args.bank_lives or args.lives
    if args.video and suffix not in (".mng", ".avi"):
        ap.error("--video must end in .mng or .avi")
    try:
        args.bank_levels = parse_ints(args.bank_levels, 1, 99)
        args.bank_seeds = parse_ints(args.bank_seeds, 0, 2**31 - 1)
    except ValueError as exc:
        ap.error(f"--bank-levels / --bank-seeds: {exc}")
    if args.video:
        args.policies, args.lives, args.jobs, args.starts = args.policies[:1], 1, 1, "first"
    policies = list(dict.fromkeys(args.policies))
    expert = None
    say = lambda m: print(m, file=sys.stderr, flush=True)   # noqa: E731
    try:
        rompath = os.environ.get("TEMPEST_ROMPATH", "")
        check_rom_dir(rompath)
        checkpoints = {p: load_checkpoint_network(p)[1] for p in policies if p not in ("expert", "random")}
        frames = {p: int(c.get("bookkeeper", {}).get("global_frames", 0)) for p, c in checkpoints.items()}
        epsilons = {p: (c["live"]["evaluation_epsilon"] if args.epsilon is None else args.epsilon)
                    for p, c in checkpoints.items()} | {"expert": 0.0, "random": 1.0}
        bank = load_bank(rompath, args.bank_levels, args.bank_seeds, log=say)[0] if args.starts != "first" else []
        cache = None if args.no_cache or args.expert_addr or args.video else ExpertCache(rompath, log=say)
        if "expert" in policies and not args.expert_addr:
            expert, args.expert_addr = start_local_expert()
        suites = evaluate(policies, args, rompath, suffix, bank, cache)
    except (RomError, RuntimeError) as exc:   # EvaluationError, BankError, the expert service not starting
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    finally:
        if expert is not None:
            expert.terminate()
            expert.wait(10)
    print_json(report(policies, frames, epsilons, suites, args))
    return 0


def noop_starts(seed: int, lives: int) -> list[int]:
    """Life i from every start, of every policy, begins with noop_starts[i] no-op ticks: the 31
    offsets in a seeded order, each once before any repeats.  A deterministic policy (the expert, a
    network at epsilon 0) plays the same life from the same offset, so a repeated offset would
    count one life twice and shrink its interval by pretence: up to 31 lives per start are distinct."""
    rng = np.random.default_rng(seed)
    rounds = -(-lives // NOOP_STARTS)
    return np.concatenate([rng.permutation(NOOP_STARTS) for _ in range(rounds)])[:lives].tolist()


def plan(policies: list[str], args, bank) -> dict[str, dict]:
    """The suites' tasks: suite -> {"starts": [...], "noop_starts": [...], "tasks": [...]}."""
    noops, suites = noop_starts(args.seed, max(args.lives, args.bank_lives)), {}
    if args.starts in ("first", "all"):
        suites["first"] = {"starts": [{"name": START, "level": 1, "id": FIRST_START}], "tasks": [
            {"policy": p, "suite": "first", "index": i, "slot": START, "start_id": FIRST_START, "noops": noops[i],
             "rng": [args.seed, i, zlib.crc32(p.encode())]} for p in policies for i in range(args.lives)],
            "lives_per_start": args.lives, "noop_starts": noops[:args.lives]}
    if args.starts in ("bank", "all"):
        starts = [{"name": b.name, "level": b.level, "id": "bank:" + b.sha256} for b in bank]
        suites["bank"] = {"starts": starts, "tasks": [
            {"policy": p, "suite": "bank", "index": k * args.bank_lives + i, "slot": b["name"], "start_id": b["id"],
             "noops": noops[i], "rng": [args.seed, k + 1, i, zlib.crc32(p.encode())]}
            for p in policies for k, b in enumerate(starts) for i in range(args.bank_lives)],
            "lives_per_start": args.bank_lives, "noop_starts": noops[:args.bank_lives]}
    return suites


def evaluate(policies: list[str], args, rompath: str, suffix: str, bank, cache: ExpertCache | None) -> dict:
    suites = plan(policies, args, bank)
    tasks = [t for suite in suites.values() for t in suite["tasks"]]
    done, cached = [], {}
    if cache is not None:   # the expert's lives already played on these starts
        keys = {id(t): cache.key(t["start_id"], t["noops"], args.max_ticks) for t in tasks if t["policy"] == "expert"}
        cached = cache.get(list(keys.values()))
        for t in tasks:
            if id(t) in keys and keys[id(t)] in cached:
                done.append((t, cached[keys[id(t)]]))
                print(life_line(t, cached[keys[id(t)]], cached=True), file=sys.stderr, flush=True)
        tasks = [t for t in tasks if not (id(t) in keys and keys[id(t)] in cached)]
    shards = [tasks[j::args.jobs] for j in range(min(args.jobs, len(tasks)))]
    workdir = tempfile.mkdtemp(prefix="tempest-eval-")
    common = {"rompath": rompath, "max_ticks": args.max_ticks, "epsilon": args.epsilon, "random_zap": args.random_zap,
              "expert_addr": args.expert_addr, "bank": [(b.name, str(b.path)) for b in bank],
              "extra": (f"-{suffix[1:]}write", "evaluation" + suffix) if args.video else ()}
    try:
        jobs = [dict(common, workdir=str(Path(workdir) / str(j))) for j in range(len(shards))]
        if len(shards) == 1:
            played = run_job(shards[0], jobs[0])
        elif shards:
            with ProcessPoolExecutor(len(shards), mp_context=multiprocessing.get_context("spawn")) as pool:
                played = [r for part in pool.map(run_job, shards, jobs) for r in part]
        else:
            played = []
        if args.video:
            shutil.move(str(Path(jobs[0]["workdir"]) / "snap" / ("evaluation" + suffix)), args.video)
            print(f"video of {policies[0]} life 1: {args.video}", file=sys.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if cache is not None:
        cache.put({cache.key(t["start_id"], t["noops"], args.max_ticks): r for t, r in played if t["policy"] == "expert"})
    out = {}
    for name, suite in suites.items():
        lives = {p: [None] * (len(suite["starts"]) * suite["lives_per_start"]) for p in policies}
        out[name] = {"starts": [{k: v for k, v in st.items() if k != "id"} for st in suite["starts"]],
                     "noop_starts": suite["noop_starts"], "lives_per_start": suite["lives_per_start"], "lives": lives}
    for task, result in done + played:
        out[task["suite"]]["lives"][task["policy"]][task["index"]] = {
            "start": task["slot"], "noops": task["noops"], **result}
    return out


if __name__ == "__main__":
    sys.exit(main())
