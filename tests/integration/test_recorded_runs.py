"""The alert rules on real noise: each recording in tests/data/recorded/ (tools/record_series.py:
the series the rules read, from a real run on the real game) replayed through promtool against
prometheus/rules/tempest.yml.  A healthy run: no alert fires at any minute.  A divergent run:
the alerts it names fire by its end (and no other alert fires before the divergence began,
when the recording says when that was)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "prometheus" / "rules" / "tempest.yml"
RECORDED = sorted((REPO / "tests" / "data" / "recorded").glob("*.yml"))
pytestmark = pytest.mark.integration


def alert_names() -> list[str]:
    return [r["alert"] for r in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]]


def fired(recording: dict, minutes: list[int], tmp_path: Path) -> set[tuple[int, str]]:
    """(minute, alert) for every alert promtool finds firing at those minutes of the recording."""
    cases = [{"eval_time": f"{m}m", "alertname": a, "exp_alerts": []} for m in minutes for a in alert_names()]
    test = {"rule_files": [str(RULES)], "evaluation_interval": "1m",
            "tests": [{"name": recording["name"], "interval": recording["interval"],
                       "input_series": recording["input_series"], "alert_rule_test": cases}]}
    path = tmp_path / "recorded_test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False, width=1 << 20))
    out = subprocess.run([shutil.which("promtool") or "promtool", "test", "rules", str(path)], capture_output=True,
                         text=True, timeout=300)
    text = out.stdout + out.stderr
    if out.returncode == 0:
        return set()
    found = {(int(m.group(2)), m.group(1)) for m in re.finditer(r"alertname: (\w+), time: (\d+)m", text)}
    assert found, f"promtool failed without a firing alert:\n{text[-3000:]}"
    return found


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed (make setup installs prometheus)")
@pytest.mark.parametrize("path", RECORDED, ids=[p.stem for p in RECORDED])
def test_rules_on_a_recorded_run(path, tmp_path):
    recording = yaml.safe_load(path.read_text())
    minutes = list(range(1, int(recording["minutes"]) + 1))
    got = fired(recording, minutes, tmp_path)
    expected = set(recording["expect_fires"])
    if not expected:
        assert not got, f"{recording['name']}: alerts fired on a healthy run: {sorted(got)}"
        return
    assert expected <= {a for _, a in got}, f"{recording['name']}: {expected} should fire; fired: {sorted(got)}"
    calm_until = recording.get("diverged_at_minute")
    if calm_until is not None:
        early = {(m, a) for m, a in got if m < calm_until}
        assert not early, f"{recording['name']}: alerts fired before the divergence began: {sorted(early)}"


def test_there_are_recordings_of_both_kinds():
    kinds = {bool(yaml.safe_load(p.read_text())["expect_fires"]) for p in RECORDED}
    assert kinds == {True, False}, "a healthy and a divergent recording are both needed"
