"""The evaluation's table (stdout, per suite) and its JSON line (the last stdout line).

Per suite and policy: the epsilon it played at, lives, points per life (95% interval), points per
1,000 ticks (95% interval), deaths per 10,000 ticks (exact Poisson 95% interval), levels cleared
per 1,000 ticks, mean level reached and capped lives; then the paired differences by start, each
policy against the expert (or, without the expert, against the first policy).
"""
from __future__ import annotations

import json

from .eval_stats import paired_difference, summarize_lives

SUITE_TITLES = {"first": "start of play (first level)", "bank": "hard starts (the bank's level starts)"}


def suite_rows(policies: list[str], frames: dict, epsilons: dict, lives: dict) -> list[dict]:
    """One row per policy: its figures, its lives, and its paired difference with the reference."""
    rows = []
    reference = "expert" if "expert" in policies else policies[0]
    for p in policies:
        row = {"policy": p, "frames": frames.get(p), "epsilon": epsilons[p], **summarize_lives(lives[p]),
               "scores": [x["points"] for x in lives[p]], "levels": [x["level"] for x in lives[p]],
               "lives_detail": lives[p]}
        if p != reference:
            d, dh = paired_difference([x["points"] for x in lives[p]], [x["points"] for x in lives[reference]])
            t, th = paired_difference([x["ticks"] for x in lives[p]], [x["ticks"] for x in lives[reference]])
            row["paired"] = {"against": reference, "points_diff": round(d, 1), "points_diff_ci95": round(dh, 1),
                             "ticks_diff": round(t, 1), "ticks_diff_ci95": round(th, 1)}
        rows.append(row)
    return rows


def print_table(suite: str, rows: list[dict], lives_per_start: int, starts: int, max_ticks: int) -> None:
    width = max(12, *(len(r["policy"]) for r in rows))
    print(f"suite {suite}: {SUITE_TITLES[suite]}, {starts} start{'s' if starts > 1 else ''} x {lives_per_start} "
          f"lives, capped at {max_ticks} ticks")
    print(f"{'policy':<{width}} {'frames':>9} {'eps':>6} {'lives':>5} {'pts/life':>9} {'±95%':>7} {'pts/1kt':>8} "
          f"{'±95%':>6} {'deaths/10kt':>11} {'95% interval':>13} {'lvl/1kt':>7} {'level':>6} {'capped':>6}")
    for r in rows:
        frames = "-" if r["frames"] is None else str(r["frames"])
        lo, hi = r["deaths_per_10k_ticks_ci95"]
        print(f"{r['policy']:<{width}} {frames:>9} {r['epsilon']:>6.3f} {r['lives']:>5} {r['mean']:>9.1f} "
              f"{r['ci95']:>7.1f} {r['points_per_1k_ticks']:>8.1f} {r['points_per_1k_ticks_ci95']:>6.1f} "
              f"{r['deaths_per_10k_ticks']:>11.2f} {f'{lo:.2f}-{hi:.2f}':>13} {r['levels_per_1k_ticks']:>7.3f} "
              f"{r['mean_level']:>6.2f} {r['capped']:>6}")
    for r in rows:
        if "paired" in r:
            p = r["paired"]
            print(f"  paired by start, {r['policy']} - {p['against']}: {p['points_diff']:+.1f} ± "
                  f"{p['points_diff_ci95']:.1f} points per life, {p['ticks_diff']:+.1f} ± {p['ticks_diff_ci95']:.1f} "
                  "ticks per life")


def report(policies: list[str], frames: dict, epsilons: dict, suites: dict, args) -> dict:
    """Print each suite's table and return the JSON object (the caller prints it last).

    `suites`: name -> {"starts", "noop_starts", "lives_per_start", "lives": {policy: [life, ...]}}."""
    out = {"lives": args.lives, "seed": args.seed, "max_ticks": args.max_ticks, "starts": args.starts,
           "suites": {}}
    for name, suite in suites.items():
        rows = suite_rows(policies, frames, epsilons, suite["lives"])
        print_table(name, rows, suite["lives_per_start"], len(suite["starts"]), args.max_ticks)
        out["suites"][name] = {"starts": suite["starts"], "lives_per_start": suite["lives_per_start"],
                               "noop_starts": suite["noop_starts"], "policies": rows}
    first = next(iter(out["suites"].values()))
    out["noop_starts"], out["policies"] = first["noop_starts"], first["policies"]   # the first suite played
    return out


def print_json(obj: dict) -> None:
    print(json.dumps(obj))
