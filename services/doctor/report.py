"""The diagnosis as markdown, in the shape of the seed's hand-written incident analysis
(training-instability-analysis.md): problem statement, critical symptoms with their numbers at
steps and frames, the root causes ranked with their arithmetic, and the cure as the exact `ctl`
commands.  Pure: a Diagnosis (findings.py) in, text out; the same diagnosis gives the same bytes
(tests/data/golden/doctor/ holds one)."""
from __future__ import annotations

import time

from .arithmetic import fmt, fmt_frames
from .findings import CURE_SHARE_OF_TOP, Diagnosis, Finding

CTL = "python -m services.learner.ctl"
RULE = "\n---\n"


def value_text(v) -> str:
    """A setting's value as `ctl set` takes it (and the learner's config parses it back)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}" if abs(v) >= 1e-4 or v == 0 else f"{v:.2e}"
    return str(v)


def set_command(changes: dict) -> str:
    return f"{CTL} set " + " ".join(f"{k}={value_text(v)}" for k, v in changes.items())


def _when(d: Diagnosis) -> str:
    said = f"Step {d.step:,.0f}" if d.step is not None else "no step yet"
    if d.frames:
        said += f" (frame {fmt_frames(d.frames)})"
    return said


def _stamp(now: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))


def _code(lines: list[str], lang: str = "") -> list[str]:
    return [f"```{lang}", *lines, "```"]


def _finding(heading: str, f: Finding) -> list[str]:
    out = [f"### {heading}: {f.title} (score {f.score:.2f})", "", "**Configuration:**"]
    out += _code([f"{k} = {value_text(v)}" for k, v in f.configuration.items()], "python")
    out += ["", "**Arithmetic:**"] + _code(f.arithmetic)
    if f.cure:
        out += ["", "**Cure:** `" + set_command(f.cure) + "`"]
    if f.advice:
        out += ["", f"**Also:** {f.advice}."]
    return out + [""]


def healthy_report(d: Diagnosis, mode: str, actions: list[dict] | None = None) -> str:
    title = "Training Stability" if d.verdict == "healthy" else "Training Stability: Not Known Yet"
    lines = [f"# {title} - {_when(d)}", "",
             f"_Written by the stability doctor at {_stamp(d.now)} (mode {mode})._", "",
             f"**Verdict: {d.verdict}.** {d.why}.", ""]
    if d.steps_per_s:
        lines += [f"Training at {fmt(d.steps_per_s)} optimizer steps/s.", ""]
    lines += ["No finding, no action.", ""]
    return "\n".join(lines + _actions(actions))


def _actions(actions: list[dict] | None) -> list[str]:
    if not actions:
        return []
    return ["## Actions Taken", ""] + [f"- {a['when']}: {a['text']}" for a in list(actions)[-10:]] + [""]


def render(d: Diagnosis, mode: str = "advise", actions: list[dict] | None = None) -> str:
    """The report of `d`; `actions`: what the doctor did about it (auto mode), newest last."""
    if not d.divergent:
        return healthy_report(d, mode, actions)
    out = [f"# Training Instability Analysis - {_when(d)}", "",
           f"_Written by the stability doctor at {_stamp(d.now)} (mode {mode})._", "",
           "## Problem Statement", f"**Q-value divergence**: {d.why}."]
    if d.steps_per_s:
        out.append(f"Training at **~{fmt(d.steps_per_s)} optimizer steps/s**.")
    out += ["", RULE, "## Critical Symptoms", ""]
    for i, s in enumerate(d.symptoms, 1):
        out += [f"### {i}. {s.title}"] + _code(s.lines) + ["", f"**Analysis**: {s.analysis}", ""]
    out += [RULE, "## Root Cause Analysis", ""]
    if not d.findings:
        out += ["The live settings are not known (the learner did not answer): no cause can be ranked.", ""]
    for i, f in enumerate(d.findings):
        out += _finding("Primary Cause" if i == 0 else f"Contributing Factor {i}", f)
    cure = d.cure()
    out += [RULE, "## The Cure", "",
            "Lower the settings first, then roll back to the newest healthy checkpoint (the rollback keeps "
            "the live settings in force: in the other order the divergence comes back):", ""]
    out += _code(([set_command(cure)] if cure else []) + [f"{CTL} rollback"], "bash")
    out += [""]
    if cure:
        out += ["## Summary: What Changes", "", "| Parameter | Old Value | New Value | Reason |", "|---|---|---|---|"]
        for f in d.to_cure():
            for name, new in f.cure.items():
                out.append(f"| `{name}` | {value_text(d.settings.get(name))} | {value_text(new)} | {f.title} |")
        out.append("")
    reported = [f for f in d.findings if f not in d.to_cure() and f.cure]
    if reported:
        out += [f"Reported, not applied (scored below {CURE_SHARE_OF_TOP:.0%} of the primary cause): "
                + "; ".join(f"`{set_command(f.cure)}` ({f.title})" for f in reported) + ".", ""]
    if d.bound is not None:
        out += ["## What to Watch For", "",
                f"- Q back inside its bound [{fmt(d.bound[0])}, {fmt(d.bound[1])}] and staying there.",
                "- The pre-clip gradient norm back under the clip; the clip ratio near 1.",
                "- If Q leaves its bound again: lower lr further, or `" + CTL + " set clamp_targets=true` "
                "(the emergency brake: TD targets clamped to target_clamp_value).", ""]
    return "\n".join(out + _actions(actions))
