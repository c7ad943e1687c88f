"""Benchmark: does the network learn?  The whole pipeline trains on the real game, then the
evaluate command scores its frame-mark checkpoints beside the expert and random on the same starts.

    .venv/bin/python bench/learning.py [--frames N] [--marks K] [--lives L] [--bank-lives B] [--long-lives M]
                                       [--eval-seed S] [--jobs J] [--set NAME=VALUE ...] [--run-dir DIR]
                                       [--train-only | --eval-only]
    .venv/bin/python bench/learning.py --ablation baseline "layernorm:LAYER_NORM=1" ...

Training: the services `make up` runs (tools/local_stack.py: redis, prometheus, replay, expert,
learner, one emulator worker) on their own ports, in a fresh run folder, with today's defaults
(the caller's learner and replay settings are ignored; --set passes one explicitly, for an
ablation), until the learner counts N global frames; the learner keeps a checkpoint at every
N/K frames (CHECKPOINT_EVERY_FRAMES).  Evaluation (`python -m services.emulator.evaluate`, the
network at epsilon 0, lives capped at 4,000 ticks), in two parts:
  1. suites: the K checkpoints, `expert` and `random` on two suites of starts: the start of play
     (L lives) and the hard-start bank (level starts where the expert itself dies; B lives from
     each of its starts), every life paired by start;
  2. long cap: the last checkpoint and the expert on the start of play with a cap of 40,000 ticks
     (M lives), so the expert's uncensored points per life are known (at 4,000 ticks every one
     of its lives is capped).
The expert's lives are cached (deterministic per start), so a rerun pays only for the network.
Progress goes to stderr; the learning curve (points per life against frames on both suites, 95%
bands, the expert and random lines, and the last mark's rates and survival) is written to
DIR/learning_curve.png; the last stdout line is one JSON object:
  frames, wall_s, train_wall_s, eval_wall_s, eval_parts_wall_s {suites, long_cap}, lives,
  bank_lives, eval_seed, curve [[frames, mean, ci95], ...] (start of play), bank_curve (the bank),
  dqn_over_expert (mean points per life on the bank, last mark over the expert),
  first_level_dqn_over_expert (the same on the start of play, capped: saturates at 1),
  suites {first, bank}: {dqn, expert, random}: points per life, per 1,000 ticks, deaths per
  10,000 ticks with intervals, levels per 1,000 ticks, capped lives, paired difference with the
  expert; long_cap {max_ticks, lives, dqn, expert}; expert_uncensored_points_per_life;
  expert_death_levels (where the expert's long-cap lives ended).
The default budget (800k frames, 4 marks, 10 + 12 x 2 + 10 lives) fits training plus evaluation
within ~75 minutes on a 2-core machine (this is the one benchmark allowed past 10 minutes).
--train-only trains and stops; --eval-only evaluates the marks already in DIR.  --ablation judges
levers without a full run: each arm trains 120k frames from scratch (under 10 minutes with its
evaluation of 10 lives on the bank) with its settings, and the last line has one row per arm.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import clean_env, logger, metrics, rompath, wait_for  # noqa: E402
from bench.learning_plot import plot  # noqa: E402

PORT_OFFSET = 700          # beside a user's `make up` (ports 5555-5560, 6390, 9090, 9101-9110)
LEARNER_METRICS = 9104 + PORT_OFFSET
MAX_TICKS = 4000
LONG_MAX_TICKS = 40_000
log = logger()


def train(run: Path, frames: int, marks: int, settings: dict[str, str]) -> float:
    """Run the stack until the learner has counted `frames` and written the last mark; wall seconds."""
    env = clean_env(TEMPEST_ROMPATH=rompath("learning"), CHECKPOINT_EVERY_FRAMES=str(frames // marks), **settings)
    t0 = time.monotonic()
    stack = subprocess.Popen([sys.executable, "-m", "tools.local_stack", "--emulators", "1", "--run-dir", str(run),
                              "--port-offset", str(PORT_OFFSET)], cwd=ROOT, env=env, start_new_session=True,
                             stdout=open(run / "stack.log", "ab"), stderr=subprocess.STDOUT)
    last_mark = run / "checkpoints" / f"mark-{frames // marks * marks:012d}.pt"
    try:
        wait_for(lambda: metrics(LEARNER_METRICS), 120, "the learner's /metrics")
        log(f"stack up (run folder {run}); training for {frames:,} global frames")
        next_report = time.monotonic() + 60
        while not last_mark.exists():
            if stack.poll() is not None:
                sys.exit(f"bench/learning.py: the stack stopped (code {stack.returncode}); see {run}/stack.log")
            time.sleep(2)   # the budget ends when its last mark is written: stop soon after
            if time.monotonic() < next_report:
                continue
            next_report += 60
            m = metrics(LEARNER_METRICS)
            done, elapsed = m.get("tempest_learner_global_frames", 0.0), time.monotonic() - t0
            rate = done / elapsed
            eta = (frames - done) / rate if rate > 0 else float("nan")
            life_mean = m.get('tempest_dqn_life_reward_mean{window="1M"}', float("nan"))
            log(f"{done:,.0f}/{frames:,} frames ({rate:.0f}/s), {m.get('tempest_learner_steps_total', 0):,.0f} steps, "
                f"expert ratio {m.get('tempest_expert_ratio', 0):.2f}, evaluation life mean {life_mean:.0f}; "
                f"~{eta / 60:.0f} min left")
    finally:
        os.killpg(stack.pid, signal.SIGINT)   # what Ctrl-C does to `make up`
        try:
            stack.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(stack.pid, signal.SIGKILL)
            stack.wait()
    return time.monotonic() - t0


def marks_of(run: Path, frames: int) -> list[Path]:
    marks = [p for p in sorted((run / "checkpoints").glob("mark-*.pt"))
             if int(p.stem[5:17]) <= frames]   # mark-<12 digits>[-<run id>]: another run's share the folder
    if not marks:
        sys.exit(f"bench/learning.py: no mark-*.pt checkpoints in {run}/checkpoints")
    return marks


def evaluate(run: Path, policies: list, lives: int, seed: int, jobs: int, *extra, name: str = "evaluation",
             max_ticks: int = MAX_TICKS) -> tuple[dict, float]:
    """One evaluate command (the network at epsilon 0); its JSON and wall seconds."""
    log(f"{name}: {', '.join(Path(p).name for p in policies)}: {lives} lives, seed {seed}, cap {max_ticks}, "
        f"{jobs} jobs {' '.join(map(str, extra))}")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "services.emulator.evaluate", *map(str, policies),
                             "--lives", str(lives), "--seed", str(seed), "--max-ticks", str(max_ticks),
                             "--epsilon", "0", "--jobs", str(jobs), *map(str, extra)], cwd=ROOT,
                            env=clean_env(TEMPEST_ROMPATH=rompath("learning")),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:   # one line per life
        log("evaluate: " + line.rstrip())
    out = proc.stdout.read()
    if proc.wait() != 0:
        sys.exit(f"bench/learning.py: the evaluation failed (code {proc.returncode})")
    (run / f"{name}.txt").write_text(out)
    return json.loads(out.strip().splitlines()[-1]), time.monotonic() - t0


FIGURES = ("lives", "mean", "ci95", "points_per_1k_ticks", "points_per_1k_ticks_ci95", "deaths", "ticks",
           "deaths_per_10k_ticks", "deaths_per_10k_ticks_ci95", "levels_per_1k_ticks", "mean_level", "capped",
           "epsilon")


def figures(row: dict) -> dict:
    """A policy's figures on a suite, without its lives (those stay in DIR/<part>.txt)."""
    out = {k: row[k] for k in FIGURES}
    if "paired" in row:
        out["paired_with_expert"] = row["paired"]
    return out


def ablation(run: Path, arms: list[str], frames: int, lives: int, seed: int, jobs: int) -> None:
    """Each arm (NAME or NAME:SETTING=VALUE,...; the first is usually the baseline) trains `frames`
    frames from scratch in its own run folder, and its last checkpoint is evaluated on the start of
    play (`lives` lives) and the bank (one life per start); the expert and random once.  Last
    line: one JSON object with a row per arm."""
    run.mkdir(parents=True, exist_ok=True)
    bank = ("--starts", "all", "--bank-lives", 1)
    refs, _ = evaluate(run, ["expert", "random"], lives, seed, jobs, *bank, name="references")
    rows = []
    for arm in arms:
        name, _, spec = arm.partition(":")
        settings = dict(item.split("=", 1) for item in spec.split(",") if item)
        arm_run = run / name
        arm_run.mkdir(parents=True, exist_ok=True)
        train_s = train(arm_run, frames, 1, settings)
        result, eval_s = evaluate(arm_run, marks_of(arm_run, frames)[-1:], lives, seed, jobs, *bank)
        first, hard = (result["suites"][k]["policies"][0] for k in ("first", "bank"))
        rows.append({"arm": name, "settings": settings, "frames": first["frames"], "mean": first["mean"],
                     "ci95": first["ci95"], "bank_mean": hard["mean"], "bank_ci95": hard["ci95"],
                     "bank_deaths_per_10k_ticks": hard["deaths_per_10k_ticks"],
                     "train_wall_s": round(train_s), "eval_wall_s": round(eval_s)})
        log(f"arm {name}: {first['mean']:.0f} ± {first['ci95']:.0f} points per life from the start of play, "
            f"{hard['mean']:.0f} ± {hard['ci95']:.0f} on the bank, at {first['frames']:,} frames")
    (expert, random), (bank_expert, bank_random) = (refs["suites"][k]["policies"] for k in ("first", "bank"))
    print(json.dumps({"ablation": rows, "lives": lives, "eval_seed": seed, "expert_mean_score": expert["mean"],
                      "random_mean_score": random["mean"], "bank_expert_mean_score": bank_expert["mean"],
                      "bank_random_mean_score": bank_random["mean"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=800_000, help="training budget in global frames")
    ap.add_argument("--marks", type=int, default=4, help="checkpoints evaluated along the way (>= 4 for a curve)")
    ap.add_argument("--lives", type=int, default=10, help="lives per policy and checkpoint from the start of play")
    ap.add_argument("--bank-lives", type=int, default=2, help="lives per policy and checkpoint from each bank start")
    ap.add_argument("--long-lives", type=int, default=10, help=f"lives of the last mark and the expert at the "
                    f"{LONG_MAX_TICKS:,}-tick cap (0: skip that part)")
    ap.add_argument("--eval-seed", type=int, default=2026, help="seed of the evaluation's no-op starts")
    ap.add_argument("--jobs", type=int, default=2, help="MAMEs evaluating at once")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a setting for the run")
    ap.add_argument("--run-dir", default="", help="run folder (default: run/learning-<time>)")
    ap.add_argument("--eval-only", action="store_true", help="evaluate the marks already in --run-dir")
    ap.add_argument("--train-only", action="store_true", help="train, write DIR/train.json (its wall time) and stop")
    ap.add_argument("--ablation", nargs="+", metavar="ARM", help="short arms instead of one run: NAME or "
                    "NAME:SETTING=VALUE,... (each ~120k frames and 10 lives unless --frames / --lives say otherwise)")
    args = ap.parse_args()
    if args.ablation:
        bad = [a for a in args.ablation if not re.fullmatch(r"[\w-]+(:[A-Z_0-9]+=[^,]*(,[A-Z_0-9]+=[^,]*)*)?", a)]
        if bad:
            ap.error(f"an arm is NAME or NAME:SETTING=VALUE,... (SETTING upper-case), not {bad[0]!r}")
        frames = args.frames if "--frames" in sys.argv else 120_000
        lives = args.lives if "--lives" in sys.argv else 10
        run = Path(args.run_dir or ROOT / "run" / time.strftime("ablation-%Y%m%d-%H%M%S")).resolve()
        return ablation(run, args.ablation, frames, lives, args.eval_seed, args.jobs)
    settings = dict(item.split("=", 1) for item in args.set)
    if args.frames < args.marks or args.marks < 1 or args.lives < 2 or args.bank_lives < 1 or args.long_lives < 0 \
            or args.train_only and args.eval_only or any(not re.fullmatch(r"[A-Z_0-9]+", k) for k in settings):
        ap.error("need --frames >= --marks >= 1, --lives >= 2, --bank-lives >= 1, --long-lives >= 0, not both "
                 "--train-only and --eval-only, and --set NAME=VALUE with an upper-case NAME")
    run = Path(args.run_dir or ROOT / "run" / time.strftime("learning-%Y%m%d-%H%M%S")).resolve()
    if args.eval_only and not run.is_dir():
        ap.error(f"--eval-only needs an existing --run-dir, {run} is not one")
    run.mkdir(parents=True, exist_ok=True)
    if args.eval_only:
        saved = run / "train.json"   # a --train-only run's wall time, reported with its evaluation
        train_s = float(json.loads(saved.read_text())["train_wall_s"]) if saved.exists() else 0.0
    else:
        train_s = train(run, args.frames, args.marks, settings)
        (run / "train.json").write_text(json.dumps({"frames": args.frames, "train_wall_s": round(train_s),
                                                    "settings": settings}))
    if args.train_only:
        log(f"training {train_s / 60:.1f} min; evaluate with --eval-only --run-dir {run}")
        return
    marks = marks_of(run, args.frames)
    result, suites_s = evaluate(run, [*marks, "expert", "random"], args.lives, args.eval_seed, args.jobs,
                                "--starts", "all", "--bank-lives", args.bank_lives, name="evaluation")
    long, long_s = ({}, 0.0) if not args.long_lives else evaluate(
        run, [marks[-1], "expert"], args.long_lives, args.eval_seed, args.jobs, name="long-cap",
        max_ticks=LONG_MAX_TICKS)
    summary = summarize(result, long, args)
    plot(run / "learning_curve.png", summary, MAX_TICKS)
    log(f"training {train_s / 60:.1f} min, evaluation {suites_s / 60:.1f} min (suites) + {long_s / 60:.1f} min "
        f"(long cap); curve: {run / 'learning_curve.png'}")
    print(json.dumps({"frames": summary["curve"][-1][0], "wall_s": round(train_s + suites_s + long_s),
                      "train_wall_s": round(train_s), "eval_wall_s": round(suites_s + long_s),
                      "eval_parts_wall_s": {"suites": round(suites_s), "long_cap": round(long_s)}, **summary,
                      "settings": settings}))


def summarize(result: dict, long: dict, args) -> dict:
    """The benchmark's figures from the two evaluate commands' JSON."""
    out = {"lives": args.lives, "bank_lives": args.bank_lives, "eval_seed": args.eval_seed, "suites": {}}
    ratios = {}
    for name, suite in result["suites"].items():
        rows = suite["policies"]
        nets = [r for r in rows if r["frames"] is not None]
        by = {r["policy"]: r for r in rows}
        out["curve" if name == "first" else "bank_curve"] = [[r["frames"], r["mean"], r["ci95"]] for r in nets]
        out["suites"][name] = {"dqn": figures(nets[-1]), "expert": figures(by["expert"]),
                               "random": figures(by["random"]), "dqn_frames": nets[-1]["frames"],
                               "marks": [figures(r) | {"frames": r["frames"]} for r in nets]}
        expert_mean = by["expert"]["mean"]
        ratios[name] = round(nets[-1]["mean"] / expert_mean, 3) if expert_mean else None
    out["dqn_over_expert"], out["first_level_dqn_over_expert"] = ratios.get("bank"), ratios.get("first")
    if long:
        rows = long["policies"]
        dqn, expert = figures(rows[0]), figures(rows[1])
        out["long_cap"] = {"max_ticks": long["max_ticks"], "lives": long["lives"], "dqn": dqn, "expert": expert}
        out["expert_uncensored_points_per_life"] = expert["mean"] if expert["capped"] == 0 else None
        out["expert_death_levels"] = [life["level"] for life in rows[1]["lives_detail"] if not life["capped"]]
    return out


if __name__ == "__main__":
    main()
