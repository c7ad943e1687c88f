"""The diagnosis as text (services/doctor/report.py), checked against golden files built from
recorded divergent runs (tests/data/golden/doctor/): the numbers must be the run's, in the seed's
shape.  After a deliberate change of the report, rewrite the goldens with
    UPDATE_GOLDEN=1 python -m pytest tests/unit/test_doctor_report.py
and read the diff."""
from __future__ import annotations

import calendar
import json
import os
import time
from pathlib import Path

import pytest
import yaml

from services.doctor.findings import Snapshot, diagnose
from services.doctor.history import expand_promtool, history_from_recording, settings_from_series
from services.doctor.report import render, set_command

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "data" / "golden" / "doctor"
RECORDED = REPO / "tests" / "data" / "recorded" / "divergence-provoked.yml"


def chain_run():
    """A real chain-MDP run of the learner (tau 1, hard copy every step), read by the scrape reader."""
    doc = json.loads((GOLDEN / "chain-target-too-fast.json").read_text())
    start = doc["start_unix"]
    series = {k: [(start + t, v) for t, v in samples] for k, samples in doc["series"].items()}
    return diagnose(Snapshot(start + doc["now"], series, doc["settings"]))


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs: UPDATE_GOLDEN=1 rewrites it (then read the diff)"


def test_the_chain_divergence_report_matches_its_golden_file():
    d = chain_run()
    text = render(d, "advise")
    check_golden("chain-target-too-fast.md", text)
    # the numbers that must be there, whatever the wording becomes
    assert d.verdict == "divergent" and d.findings[0].cause == "target_too_fast"
    assert text.startswith("# Training Instability Analysis - Step ")
    for needed in ("## Critical Symptoms", "### 1. Q-Value Divergence", "Bound: [0, 100]", "## Root Cause Analysis",
                   "### Primary Cause: Target network updated too fast (score 1.00)",
                   "target = (1 - 1)^100 old + (1 - (1 - 1)^100) new = 0 old + 1 new",
                   "the target takes half of the online network in 1 steps",
                   "cure: after 100 steps target = 0.6058 old + 0.3942 new",
                   "python -m services.learner.ctl set tau=0.005 hard_target_refresh_every_steps=25000",
                   "python -m services.learner.ctl rollback", "| `tau` | 1 | 0.005 |",
                   "### 2. Setting Changes in the Window", ": tau 0.005 -> 1"):
        assert needed in text, needed
    first_out = [line for line in text.splitlines() if "x the upper bound)" in line]
    assert first_out, "the Q rows name how far past the bound Q went"


@pytest.mark.skipif(not RECORDED.exists(), reason="no recording of a provoked divergence yet (tools/record_series.py)")
def test_the_recorded_divergence_report_matches_its_golden_file():
    doc = yaml.safe_load(RECORDED.read_text())
    # its samples at their wall-clock times: from when it was recorded, at its interval
    start = calendar.timegm(time.strptime(doc["recorded"], "%Y-%m-%d %H:%M UTC"))
    series = history_from_recording(doc, start=start)
    # the live settings of the run: those the recording carries, and what its notes file says
    notes = GOLDEN / "divergence-provoked-settings.json"
    settings = {**settings_from_series(series), **(json.loads(notes.read_text())["settings"] if notes.exists() else {})}
    end = max(t for samples in series.values() for t, _ in samples)
    # the whole recording judged: its Q passed the bound by step 75 and never came back
    d = diagnose(Snapshot(end, series, settings, judge_from=start))
    text = render(d, "advise")
    check_golden("divergence-provoked.md", text)
    assert d.verdict == "divergent" and "Q max 3.125e+14 above its bound 2,000" in d.why
    assert [f.cause for f in d.findings][:2] == ["target_too_fast", "lr_too_high"]
    assert d.cure() == {"tau": 0.005, "lr": 0.001}
    for needed in ("Bound: [-5, 2,000]", "Step 75 (frame 10k):", "(6.580e+07x the upper bound)",
                   "first out of its bound at Step 75 (frame 10k)", "GradNorm: 81,157 to 1.475e+11",
                   "effective lr = 0.05 = 50x the sane 0.001", "0 old + 1 new",
                   "python -m services.learner.ctl set tau=0.005 lr=0.001"):
        assert needed in text, needed


def test_a_healthy_report_says_so_and_nothing_else():
    d = chain_run()
    healthy = diagnose(Snapshot(d.now, {k: v[:3] for k, v in json.loads(
        (GOLDEN / "chain-target-too-fast.json").read_text())["series"].items()}, d.settings))
    text = render(healthy, "auto")
    assert healthy.verdict == "healthy" and "No finding, no action." in text and "ctl set" not in text


def test_commands_are_what_ctl_takes():
    assert set_command({"lr": 0.001, "clamp_targets": True, "n_step": 5, "tau": 5e-05}) == \
        "python -m services.learner.ctl set lr=0.001 clamp_targets=true n_step=5 tau=5.00e-05"


def test_promtool_notation():
    assert expand_promtool("1 _ 2x2 1+2x3 5-1x2 _x1 stale") == \
        [1.0, None, 2.0, 2.0, 2.0, 1.0, 3.0, 5.0, 7.0, 5.0, 4.0, 3.0, None, None, None]
    doc = {"interval": "5s", "input_series": [
        {"series": "tempest_learner_q_max", "values": "1 2 _ 4"},
        {"series": 'tempest_frames_total{worker="a"}', "values": "10 20 30 40"},
        {"series": 'tempest_frames_total{worker="b"}', "values": "1 _ 3 4"},
        {"series": "tempest_learner_steps_total", "values": "0+100x3"},
        {"series": 'tempest_learner_setting{name="max_grad_norm"}', "values": "5x3"}]}
    h = history_from_recording(doc, start=100)
    assert h["q_max"] == [(100, 1), (105, 2), (115, 4)]
    assert h["global_frames"] == [(100, 11), (105, 20), (110, 33), (115, 44)]
    assert h["step"][-1] == (115, 300) and h["setting_max_grad_norm"][0] == (100, 5)


@pytest.mark.parametrize("path", sorted((REPO / "tests" / "data" / "recorded").glob("*.yml")),
                         ids=lambda p: p.stem)
def test_every_recorded_run_gets_the_verdict_it_is_recorded_for(path):
    """A healthy recording (no alert expected): healthy over its whole length, no finding even with
    the worst settings; a divergent one: divergent."""
    doc = yaml.safe_load(path.read_text())
    series = history_from_recording(doc)
    end = max(t for samples in series.values() for t, _ in samples)
    d = diagnose(Snapshot(end, series, {"lr": 0.1, "tau": 1.0, "n_step": 20}, judge_from=0.0))
    assert d.verdict == ("divergent" if doc["expect_fires"] else "healthy"), d.why
    assert bool(d.findings) == bool(doc["expect_fires"])
