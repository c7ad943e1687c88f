"""The doctor's loop (services/doctor/doctor.py) with a stand-in history and learner: when it acts
and when it holds back (mode, cooldown, cap per hour, settings changed by hand), what it logs,
and that a source or a learner away is counted, not fatal."""
from __future__ import annotations

import json
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from services.doctor.config import load_doctor_config
from services.doctor.doctor import Doctor
from services.doctor.metrics import DoctorMetrics
from services.doctor.server import serve
from services.learner.control import ControlError, ControlTimeout
from services.learner.settings import LiveSettings
from tempest_common.config import ConfigError

DIVERGENT, HEALTHY = 5000.0, 50.0


class History:
    """Q max at each call from `q` (the last value repeats); the rest steady."""

    def __init__(self, q: list[float], changed: dict | None = None):
        self.q, self.calls, self.changed, self.fail = list(q), 0, changed or {}, False

    def history(self, now, window_s):
        if self.fail:
            raise OSError("connection refused")
        q = self.q[min(self.calls, len(self.q) - 1)]
        self.calls += 1
        out = {"q_max": [(now, q)], "q_min": [(now, 0.0)], "q_bound_lower": [(now, -5.0)],
               "q_bound_upper": [(now, 2000.0)], "step": [(now - 5, 1000.0), (now, 1240.0)],
               "target_distance": [(now, 0.0)]}
        for name, t in self.changed.items():
            out[f"changed_{name}"] = [(now, t)]
        return out


class Learner:
    def __init__(self, **settings):
        self.settings = {**LiveSettings().__dict__, **settings}
        self.calls, self.away, self.no_checkpoint = [], False, False

    def get(self):
        if self.away:
            raise ControlError("timeout", "no reply")
        return dict(self.settings)

    def set(self, **changes):
        self.calls.append(("set", changes))
        self.settings.update(changes)
        return dict(self.settings)

    def rollback(self, step=None):
        self.calls.append(("rollback", step))
        if self.no_checkpoint:
            raise ControlError("refused", "no_checkpoint: no healthy checkpoint of run r")
        return {"from_step": 1240, "to_step": 900, "checkpoint": "checkpoint-r-000000000900.pt", "healthy": True}


class Clock:
    def __init__(self):
        self.t = 1_000_000.0

    def __call__(self):
        return self.t


def doctor(tmp_path, history, learner, mode="auto", **env):
    cfg = load_doctor_config({"DOCTOR_MODE": mode, "DOCTOR_DIR": str(tmp_path), "DOCTOR_COOLDOWN_S": "600",
                              "DOCTOR_MAX_ACTIONS_PER_HOUR": "2", "DOCTOR_SETTLE_S": "10", "DOCTOR_MEMORY_S": "60",
                              **env})
    registry = CollectorRegistry()
    clock = Clock()
    return Doctor(cfg, history, learner, DoctorMetrics(registry), clock), registry, clock


def actions(tmp_path) -> list[dict]:
    path = tmp_path / "actions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def count(registry, action):
    return registry.get_sample_value("tempest_doctor_actions_total", {"action": action})


def test_auto_cures_first_then_rolls_back_and_logs_before_and_after(tmp_path):
    learner = Learner(tau=1.0)
    doc, registry, clock = doctor(tmp_path, History([DIVERGENT]), learner)
    d = doc.tick()
    assert d.findings[0].cause == "target_too_fast"
    assert learner.calls == [("set", {"tau": 0.005}), ("rollback", None)]
    logged = actions(tmp_path)
    assert [(a["action"], a["before"], a["after"]) for a in logged] == [
        ("set", {"tau": 1.0}, {"tau": 0.005}),
        ("rollback", {"step": 1240}, {"step": 900, "checkpoint": "checkpoint-r-000000000900.pt"})]
    assert logged[0]["step"] == 1240 and "target_too_fast" in logged[0]["why"]
    assert count(registry, "set") == 1 and count(registry, "rollback") == 1
    assert registry.get_sample_value("tempest_doctor_verdict") == 1
    assert registry.get_sample_value("tempest_doctor_findings", {"cause": "target_too_fast"}) == d.findings[0].score
    assert (tmp_path / "diagnosis.md").read_text().startswith("# Training Instability Analysis")
    assert list(tmp_path.glob("diagnosis-step-*.md")), "the diagnosis acted on is kept"


def test_advise_and_off_never_act(tmp_path):
    for mode in ("advise", "off"):
        learner = Learner(tau=1.0)
        doc, registry, _ = doctor(tmp_path / mode, History([DIVERGENT]), learner, mode=mode)
        doc.tick()
        assert learner.calls == [] and actions(tmp_path / mode) == []


def test_cooldown_then_cap_per_hour(tmp_path):
    learner = Learner(lr=0.1)
    doc, registry, clock = doctor(tmp_path, History([DIVERGENT]), learner, DOCTOR_COOLDOWN_S="300")
    doc.tick()                      # acts: lr 0.1 -> 0.001
    clock.t += 100
    doc.tick()                      # still divergent: held by the cooldown
    assert count(registry, "skipped_cooldown") == 1 and count(registry, "rollback") == 1
    clock.t += 300
    doc.tick()                      # acts again: lr 0.001 -> 0.00033 (the seed: "lower LR further")
    assert learner.calls[-2] == ("set", {"lr": 0.00033})
    clock.t += 600
    doc.tick()                      # the third within the hour: the cap
    assert count(registry, "skipped_cap") == 1 and count(registry, "rollback") == 2
    clock.t += 3600
    doc.tick()
    assert count(registry, "rollback") == 3


def test_a_setting_changed_by_hand_after_the_action_is_never_overridden(tmp_path):
    learner = Learner(lr=0.1)
    history = History([DIVERGENT])
    doc, registry, clock = doctor(tmp_path, history, learner, DOCTOR_COOLDOWN_S="0")
    doc.tick()
    assert learner.settings["lr"] == 0.001
    learner.settings["lr"] = 0.05          # a person: `ctl set lr=0.05`
    clock.t += 60
    doc.tick()
    assert "lr" in doc.hands_off and count(registry, "hands_off") == 1
    assert learner.settings["lr"] == 0.05, "the doctor does not set lr again"
    assert learner.calls[-1] == ("rollback", None)
    assert [a["action"] for a in actions(tmp_path)] == ["set", "rollback", "hands_off", "rollback"]
    assert any(a["action"] == "hands_off" and a["before"] == {"lr": 0.05} for a in actions(tmp_path))


def test_a_setting_the_doctor_never_set_but_a_person_changed_after_its_action(tmp_path):
    learner = Learner(lr=0.1, tau=0.05)
    history = History([DIVERGENT])
    doc, registry, clock = doctor(tmp_path, history, learner, DOCTOR_COOLDOWN_S="0")
    doc.tick()                              # lr cured; tau 0.05 (half-life 14 steps) cured too
    acted = clock.t
    assert learner.settings["tau"] == 0.005
    # tau changed by a person 30 s after the doctor's action: its change time says so
    learner.settings["tau"] = 0.5
    history.changed = {"tau": acted + 30}
    clock.t += 60
    doc.tick()
    assert "tau" in doc.hands_off and learner.settings["tau"] == 0.5
    # its own change (stamped at its action) is not a person's
    assert "lr" not in doc.hands_off


def test_the_cure_holds_when_q_comes_back(tmp_path):
    learner = Learner(tau=1.0)
    doc, registry, clock = doctor(tmp_path, History([DIVERGENT, HEALTHY]), learner)
    doc.tick()
    clock.t += 30
    d = doc.tick()
    assert d.verdict == "healthy" and d.findings == []
    assert registry.get_sample_value("tempest_doctor_verdict") == 0
    assert "## Actions Taken" in (tmp_path / "diagnosis.md").read_text()


def test_no_checkpoint_to_go_back_to_the_cure_still_stands(tmp_path):
    learner = Learner(lr=0.1)
    learner.no_checkpoint = True
    doc, registry, _ = doctor(tmp_path, History([DIVERGENT]), learner)
    doc.tick()
    assert learner.settings["lr"] == 0.001 and count(registry, "rollback_refused") == 1
    assert actions(tmp_path)[-1]["action"] == "rollback_refused"


def test_a_source_or_a_learner_away_is_counted_and_the_doctor_carries_on(tmp_path):
    history, learner = History([DIVERGENT]), Learner(lr=0.1)
    doc, registry, clock = doctor(tmp_path, history, learner, mode="advise")
    history.fail = True
    assert doc.tick() is None
    assert registry.get_sample_value("tempest_doctor_errors_total", {"reason": "metrics"}) == 1
    history.fail, learner.away = False, True
    d = doc.tick()     # settings from the learner's exported ones: none here, so no cause ranked
    assert d.verdict == "divergent" and registry.get_sample_value("tempest_doctor_errors_total",
                                                                  {"reason": "learner"}) == 1


def test_bad_configuration_is_one_clear_error():
    with pytest.raises(ConfigError, match="DOCTOR_MODE=fix is not one of the allowed choices"):
        load_doctor_config({"DOCTOR_MODE": "fix"})
    with pytest.raises(ConfigError, match="DOCTOR_SCRAPE_URLS"):
        load_doctor_config({"DOCTOR_SOURCE": "scrape", "DOCTOR_SCRAPE_URLS": "learner:9104"})
    with pytest.raises(ConfigError, match="DOCTOR_COOLDOWN_S=-1 is out of range"):
        load_doctor_config({"DOCTOR_COOLDOWN_S": "-1"})


def test_the_http_port_serves_the_diagnosis_and_the_metrics(tmp_path):
    doc, registry, _ = doctor(tmp_path, History([DIVERGENT]), Learner(tau=1.0), mode="advise")
    doc.tick()
    server = serve("127.0.0.1", 0, lambda: doc.report, registry)
    try:
        port = server.server_address[1]
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/diagnosis.md", timeout=5).read().decode()
        assert text == doc.report and "Target network updated too fast" in text
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "tempest_doctor_verdict 1.0" in metrics
    finally:
        server.shutdown()


def test_a_cure_that_cannot_be_set_is_not_followed_by_a_rollback(tmp_path):
    """Rolling back without the cure would bring the divergence back: no rollback, no cooldown
    spent; the next turn tries again."""
    learner = Learner(lr=0.1)
    doc, registry, clock = doctor(tmp_path, History([DIVERGENT]), learner)
    real_set = learner.set

    def away(**changes):
        raise ControlTimeout("timeout", "no reply from the learner")
    learner.set = away
    doc.tick()
    assert learner.calls == [] and registry.get_sample_value("tempest_doctor_errors_total", {"reason": "control"}) == 1
    learner.set = real_set
    clock.t += 5
    doc.tick()
    assert learner.calls == [("set", {"lr": 0.001}), ("rollback", None)]
