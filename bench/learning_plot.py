"""The learning benchmark's picture: points per life against frames on both suites of starts
(the start of play and the hard-start bank), with 95% bands and the expert and random lines, and
under them the last mark's scoring rate and survival beside the expert's and random's."""
from __future__ import annotations

from pathlib import Path

TITLES = {"first": "start of play (first level)", "bank": "hard starts (bank of level starts)"}


def _rate_line(name: str, f: dict) -> str:
    lo, hi = f["deaths_per_10k_ticks_ci95"]
    return (f"{name:<8} {f['mean']:>8.0f} ±{f['ci95']:>6.0f}   {f['points_per_1k_ticks']:>7.0f} "
            f"±{f['points_per_1k_ticks_ci95']:>5.0f}   {f['deaths_per_10k_ticks']:>6.2f} [{lo:.2f}-{hi:.2f}]   "
            f"{f['levels_per_1k_ticks']:>5.2f}   {f['capped']:>2}/{f['lives']:<3} eps {f['epsilon']:g}")


def plot(path: Path, summary: dict, max_ticks: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    suites = [s for s in ("first", "bank") if s in summary["suites"]]
    fig = plt.figure(figsize=(12, 8.2))
    grid = fig.add_gridspec(2, len(suites), height_ratios=(3, 2))
    for i, name in enumerate(suites):
        ax = fig.add_subplot(grid[0, i])
        curve = summary["curve" if name == "first" else "bank_curve"]
        suite = summary["suites"][name]
        x = [c[0] / 1e6 for c in curve]
        ax.plot(x, [c[1] for c in curve], "o-", color="C0", label="network (epsilon 0)")
        ax.fill_between(x, [c[1] - c[2] for c in curve], [c[1] + c[2] for c in curve], color="C0", alpha=0.2)
        for key, color in (("expert", "C2"), ("random", "C3")):
            ref = suite[key]
            ax.axhline(ref["mean"], color=color, ls="--", label=f"{key} {ref['mean']:.0f} ({ref['capped']} of "
                       f"{ref['lives']} lives capped)")
            ax.axhspan(ref["mean"] - ref["ci95"], ref["mean"] + ref["ci95"], color=color, alpha=0.1)
        ax.set(xlabel="global frames (millions)", ylabel="game points per life (95% CI)", xlim=(0, None),
               ylim=(0, None), title=f"{TITLES[name]}\n{suite['dqn']['lives']} lives per policy, capped at "
                                     f"{max_ticks:,} ticks")
        ax.legend(loc="lower right", fontsize=8)
    text = fig.add_subplot(grid[1, :])
    text.axis("off")
    lines = []
    header = "policy    pts/life   ±95%   pts/1k ticks ±95%   deaths/10k ticks [95%]   lvl/1kt  capped"
    for name in suites:
        suite = summary["suites"][name]
        lines += [f"{TITLES[name]} (last mark at {suite['dqn_frames']:,} frames)", header]
        lines += [_rate_line(k, suite[k]) for k in ("dqn", "expert", "random")]
        lines.append("")
    if "long_cap" in summary:
        lc = summary["long_cap"]
        lines += [f"start of play, capped at {lc['max_ticks']:,} ticks ({lc['lives']} lives): the expert's "
                  f"uncensored points per life", header, _rate_line("dqn", lc["dqn"]),
                  _rate_line("expert", lc["expert"])]
    text.text(0.0, 1.0, "\n".join(lines), family="monospace", fontsize=8, va="top")
    ratio = summary.get("dqn_over_expert")
    fig.suptitle("Tempest: does the network learn?  dqn_over_expert (bank, points per life) = "
                 f"{ratio if ratio is not None else 'n/a'}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
