"""Benchmark: does the network learn?  The whole pipeline trains on the real game, then the
evaluate command scores its frame-mark checkpoints beside the expert and random on the same starts.

    .venv/bin/python bench/learning.py [--frames N] [--marks K] [--lives L] [--eval-seed S] [--jobs J]
                                       [--set NAME=VALUE ...] [--run-dir DIR] [--eval-only]
    .venv/bin/python bench/learning.py --ablation baseline "layernorm:LAYER_NORM=1" ...

Training: the services `make up` runs (tools/local_stack.py: redis, prometheus, replay, expert,
learner, one emulator worker) on their own ports, in a fresh run folder, with today's defaults
(the caller's learner and replay settings are ignored; --set passes one explicitly, for an
ablation), until the learner counts N global frames; the learner keeps a checkpoint at every
N/K frames (CHECKPOINT_EVERY_FRAMES).  Evaluation: `python -m services.emulator.evaluate` on
those K checkpoints, `expert` and `random`, L lives each from the same seeded starts, capped at
4,000 ticks per life.  Progress goes to stderr; the learning curve (points per life against
frames, 95% bands, the expert and random lines) is written to DIR/learning_curve.png; the last
stdout line is one JSON object:
  frames, wall_s (training + evaluation), train_wall_s, eval_wall_s, lives, eval_seed,
  curve [[frames, mean, ci95], ...], dqn_mean_score (the last checkpoint), dqn_ci95,
  expert_mean_score, random_mean_score, dqn_over_expert.
The default budget (800k frames, 4 marks, 30 lives) fits training plus evaluation within 70
minutes on a 2-core machine (this is the one benchmark allowed past 10 minutes).  --eval-only
evaluates the marks already in DIR (a run that was trained before).  --ablation judges levers
without a full run: each arm trains 120k frames from scratch (under 10 minutes with its
evaluation of 10 lives) with its settings, and the last line has one row per arm.
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

PORT_OFFSET = 700          # beside a user's `make up` (ports 5555-5560, 6390, 9090, 9101-9110)
LEARNER_METRICS = 9104 + PORT_OFFSET
MAX_TICKS = 4000
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


def evaluate(run: Path, policies: list, lives: int, seed: int, jobs: int) -> tuple[dict, float]:
    log(f"evaluating {', '.join(Path(p).name for p in policies)}: {lives} lives each, seed {seed}, {jobs} jobs")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "services.emulator.evaluate", *map(str, policies),
                             "--lives", str(lives), "--seed", str(seed), "--max-ticks", str(MAX_TICKS),
                             "--jobs", str(jobs)], cwd=ROOT, env=clean_env(TEMPEST_ROMPATH=rompath("learning")),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:   # one line per life
        log("evaluate: " + line.rstrip())
    out = proc.stdout.read()
    if proc.wait() != 0:
        sys.exit(f"bench/learning.py: the evaluation failed (code {proc.returncode})")
    (run / "evaluation.txt").write_text(out)
    return json.loads(out.strip().splitlines()[-1]), time.monotonic() - t0


def plot(path: Path, curve: list, expert: dict, random: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    x = [c[0] / 1e6 for c in curve]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(x, [c[1] for c in curve], "o-", color="C0", label="network (evaluation epsilon)")
    ax.fill_between(x, [c[1] - c[2] for c in curve], [c[1] + c[2] for c in curve], color="C0", alpha=0.2)
    for ref, color, name in ((expert, "C2", "expert"), (random, "C3", "random")):
        ax.axhline(ref["mean"], color=color, ls="--", label=f"{name} {ref['mean']:.0f}")
        ax.axhspan(ref["mean"] - ref["ci95"], ref["mean"] + ref["ci95"], color=color, alpha=0.1)
    ax.set(xlabel="global frames (millions)", ylabel="game points per life (95% CI)", xlim=(0, None), ylim=(0, None),
           title=f"Tempest: points per life from the same {len(expert['scores'])} starts\n"
                 f"(lives capped at {MAX_TICKS} ticks: {expert['capped']} of the expert's)")
    ax.legend(loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def ablation(run: Path, arms: list[str], frames: int, lives: int, seed: int, jobs: int) -> None:
    """Each arm (NAME or NAME:SETTING=VALUE,...; the first is usually the baseline) trains `frames`
    frames from scratch in its own run folder, and its last checkpoint is evaluated; the expert and
    random once.  Last line: one JSON object with a row per arm."""
    run.mkdir(parents=True, exist_ok=True)
    refs, _ = evaluate(run, ["expert", "random"], lives, seed, jobs)
    rows = []
    for arm in arms:
        name, _, spec = arm.partition(":")
        settings = dict(item.split("=", 1) for item in spec.split(",") if item)
        arm_run = run / name
        arm_run.mkdir(parents=True, exist_ok=True)
        train_s = train(arm_run, frames, 1, settings)
        result, eval_s = evaluate(arm_run, marks_of(arm_run, frames)[-1:], lives, seed, jobs)
        row = result["policies"][0]
        rows.append({"arm": name, "settings": settings, "frames": row["frames"], "mean": row["mean"],
                     "ci95": row["ci95"], "train_wall_s": round(train_s), "eval_wall_s": round(eval_s)})
        log(f"arm {name}: {row['mean']:.0f} ± {row['ci95']:.0f} points per life at {row['frames']:,} frames")
    expert, random = refs["policies"]
    print(json.dumps({"ablation": rows, "lives": lives, "eval_seed": seed, "expert_mean_score": expert["mean"],
                      "random_mean_score": random["mean"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=800_000, help="training budget in global frames")
    ap.add_argument("--marks", type=int, default=4, help="checkpoints evaluated along the way (>= 4 for a curve)")
    ap.add_argument("--lives", type=int, default=30, help="lives per policy and checkpoint")
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
    if args.frames < args.marks or args.marks < 1 or args.lives < 2 or any(not re.fullmatch(r"[A-Z_0-9]+", k)
                                                                           for k in settings):
        ap.error("need --frames >= --marks >= 1, --lives >= 2, and --set NAME=VALUE with an upper-case NAME")
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
    result, eval_s = evaluate(run, [*marks_of(run, args.frames), "expert", "random"], args.lives, args.eval_seed,
                              args.jobs)
    rows = {Path(p["policy"]).name if p["frames"] is not None else p["policy"]: p for p in result["policies"]}
    curve = [[p["frames"], p["mean"], p["ci95"]] for p in result["policies"] if p["frames"] is not None]
    dqn, expert, random = curve[-1], rows["expert"], rows["random"]
    plot(run / "learning_curve.png", curve, expert, random)
    log(f"training {train_s / 60:.1f} min, evaluation {eval_s / 60:.1f} min; curve: {run / 'learning_curve.png'}")
    print(json.dumps({"frames": curve[-1][0], "wall_s": round(train_s + eval_s), "train_wall_s": round(train_s),
                      "eval_wall_s": round(eval_s), "lives": args.lives, "eval_seed": args.eval_seed, "curve": curve,
                      "dqn_mean_score": dqn[1], "dqn_ci95": dqn[2], "expert_mean_score": expert["mean"],
                      "random_mean_score": random["mean"],
                      "dqn_over_expert": round(dqn[1] / expert["mean"], 3) if expert["mean"] else None,
                      "settings": settings}))


if __name__ == "__main__":
    main()
