"""Prometheus metrics of the stability doctor."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from .findings import CAUSES

ACTIONS = ("set", "rollback", "rollback_refused", "skipped_cooldown", "skipped_cap", "hands_off")
ERRORS = ("metrics", "learner", "control", "write")
VERDICTS = {"healthy": 0.0, "divergent": 1.0, "unknown": -1.0}


class DoctorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        r = {"registry": registry} if registry is not None else {}
        self.verdict = Gauge("tempest_doctor_verdict", "0 healthy, 1 divergent (Q out of its bound), -1 not known "
                             "yet (no Q or no bound)", **r)
        self.verdict.set(-1.0)
        self.findings = Gauge("tempest_doctor_findings", "Score of each cause in the latest diagnosis (0-1; 0: not "
                              "a finding)", ["cause"], **r)
        self.actions = Counter("tempest_doctor_actions", "What the doctor did (auto mode): set, rollback, and what "
                               "it held back from (cooldown, cap, a setting changed by hand)", ["action"], **r)
        self.errors = Counter("tempest_doctor_errors", "Diagnoses or actions that failed, by what was away: metrics "
                              "(Prometheus or a scrape), learner (control get), control (set/rollback), write",
                              ["reason"], **r)
        self.last_run = Gauge("tempest_doctor_last_run_time_seconds", "Unix time of the latest diagnosis", **r)
        self.mode = Gauge("tempest_doctor_mode", "1 for the mode in force (off, advise, auto)", ["mode"], **r)
        for cause in CAUSES:
            self.findings.labels(cause=cause)
        for action in ACTIONS:
            self.actions.labels(action=action)
        for reason in ERRORS:
            self.errors.labels(reason=reason)

    def export_mode(self, mode: str) -> None:
        for m in ("off", "advise", "auto"):
            self.mode.labels(mode=m).set(1.0 if m == mode else 0.0)

    def export_diagnosis(self, verdict: str, scores: dict[str, float], at: float) -> None:
        self.verdict.set(VERDICTS[verdict])
        for cause in CAUSES:
            self.findings.labels(cause=cause).set(scores.get(cause, 0.0))
        self.last_run.set(at)
