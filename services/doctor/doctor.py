"""The doctor's loop: every DOCTOR_INTERVAL_S read the metric history and the live settings, judge
(findings.py), write DOCTOR_DIR/diagnosis.md (report.py), export the verdict, and in auto mode
act: apply the cure through the learner's control endpoint, then roll back to the newest healthy
checkpoint (the rollback keeps the live settings, so the cure goes first, or the divergence would
come back from the healthy network).

Guards on acting (auto):
  * a cooldown (DOCTOR_COOLDOWN_S) after each action and a cap per hour (DOCTOR_MAX_ACTIONS_PER_HOUR);
  * hands off what a person changed: a setting whose live value is no longer what the doctor set,
    or whose change time (tempest_learner_setting_change_time_seconds) is after the doctor's own
    action, is never changed by the doctor again (for the life of this process);
  * every action is one log line with its before and after values and one JSON line in
    DOCTOR_DIR/actions.jsonl.
Nothing the doctor reads or calls stops it: a source or a learner away is logged (once per
kind every 10 s), counted in tempest_doctor_errors_total{reason}, and the next turn tries again.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

from tempest_common.limited_log import LimitedLog
from tempest_common.request_client import RequestError, RequestTimeout

from .arithmetic import latest
from .findings import Diagnosis, Snapshot, diagnose
from .history import SETTING_NAMES, HistoryReader, settings_from_series
from .metrics import DoctorMetrics
from .report import render

log = logging.getLogger("doctor")
HOUR_S = 3600.0
# The learner stamps a change with its own clock when it applies it, a moment after the doctor's
# request left: a change stamped more than this after the doctor's own is someone else's.
OWN_CHANGE_SLACK_S = 2.0


def same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(a)), abs(float(b)))
    return a == b


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Doctor:
    def __init__(self, cfg, reader: HistoryReader, control, metrics: DoctorMetrics,
                 clock: Callable[[], float] = time.time):
        """control: a ControlClient (get / set / rollback) or anything alike; None: never acts."""
        self.cfg, self.reader, self.control, self.metrics, self.clock = cfg, reader, control, metrics, clock
        self.dir = Path(cfg.doctor_dir)
        self.report_path, self.actions_path = self.dir / "diagnosis.md", self.dir / "actions.jsonl"
        self.report = "# Stability doctor\n\nNo diagnosis yet.\n"
        self.diagnosis: Diagnosis | None = None
        self.set_by_doctor: dict[str, object] = {}   # setting -> the value the doctor last set
        self.set_at: dict[str, float] = {}            # setting -> when the doctor last set it
        self.hands_off: set[str] = set()
        self.action_times: deque[float] = deque()
        self.last_action: float | None = None
        self.actions: deque[dict] = deque(maxlen=100)  # this process's latest, for the report
        self._stop = threading.Event()
        self._log = LimitedLog(log)
        metrics.export_mode(cfg.mode)

    # -- the loop ---------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        log.info("stability doctor: mode %s, history from %s, every %g s", self.cfg.mode, self.cfg.source,
                 self.cfg.interval_s)
        while not self._stop.is_set():
            started = time.monotonic()
            if self.cfg.mode != "off":
                self.tick()
            self._stop.wait(max(0.0, self.cfg.interval_s - (time.monotonic() - started)))

    def tick(self) -> Diagnosis | None:
        """One diagnosis (and, in auto mode, the action it calls for); None when the history could not be read."""
        now = self.clock()
        try:
            series = self.reader.history(now, self.cfg.window_s)
        except Exception as exc:   # Prometheus or a service away, a malformed answer: counted, next turn
            self.metrics.errors.labels(reason="metrics").inc()
            self._log.warning("metrics", "cannot read the metric history: %s", exc)
            if self.diagnosis is None:
                self.report = f"# Stability doctor\n\nNo diagnosis yet: cannot read the metric history ({exc}).\n"
            return None
        settings = self._live_settings(series)
        self._notice_hand_changes(settings, series)
        judge_from = now - self.cfg.memory_s
        if self.last_action is not None:
            judge_from = max(judge_from, self.last_action + self.cfg.settle_s)
        d = diagnose(Snapshot(now, series, settings, judge_from))
        acted = d.divergent and self.cfg.mode == "auto" and self.act(d, settings, now)
        self.diagnosis = d
        self.metrics.export_diagnosis(d.verdict, {f.cause: f.score for f in d.findings}, now)
        self.report = render(d, self.cfg.mode, self.actions)
        self._write(self.report_path, self.report)
        if acted:   # the diagnosis the doctor acted on is kept: the next ones will say "healthy"
            self._write(self.dir / f"diagnosis-step-{d.step or 0:012.0f}.md", self.report)
        return d

    def _write(self, path: Path, text: str) -> None:
        try:
            write_atomically(path, text)
        except OSError as exc:
            self.metrics.errors.labels(reason="write").inc()
            self._log.warning("write", "cannot write %s: %s", path, exc.strerror or exc)

    def _live_settings(self, series) -> dict:
        if self.control is not None:
            try:
                return dict(self.control.get())
            except (RequestError, RequestTimeout) as exc:   # the learner is away or restarting
                self.metrics.errors.labels(reason="learner").inc()
                self._log.warning("learner", "the learner's control endpoint did not answer (%s): settings read "
                                  "from its metrics", exc)
        return settings_from_series(series)

    # -- hands off what a person changed --------------------------------------------------------------
    def _notice_hand_changes(self, settings: dict, series) -> None:
        if self.last_action is None:
            return
        first_action = self.action_times[0] if self.action_times else self.last_action
        for name in SETTING_NAMES:
            if name in self.hands_off:
                continue
            why = None
            if name in self.set_by_doctor and name in settings and not same(settings[name], self.set_by_doctor[name]):
                why = f"its live value {settings[name]!r} is not the {self.set_by_doctor[name]!r} the doctor set"
            changed_at = latest(series.get(f"changed_{name}"))
            own = self.set_at.get(name, first_action)
            if why is None and changed_at is not None and changed_at > own + OWN_CHANGE_SLACK_S:
                why = f"it was changed at {changed_at:.0f}, after the doctor's action at {own:.0f}"
            if why:
                self.hands_off.add(name)
                self.metrics.actions.labels(action="hands_off").inc()
                log.warning("doctor: hands off %s from now on: changed by hand (%s)", name, why)
                self._record(self.clock(), "hands_off", {name: settings.get(name)}, {}, why,
                             latest(series.get("step")))

    # -- acting ---------------------------------------------------------------------------------------
    def _may_act(self, now: float) -> str | None:
        """Why the doctor may not act now (None: it may)."""
        while self.action_times and self.action_times[0] <= now - HOUR_S:
            self.action_times.popleft()
        if self.last_action is not None and now - self.last_action < self.cfg.cooldown_s:
            return "skipped_cooldown"
        if len(self.action_times) >= self.cfg.max_actions_per_hour:
            return "skipped_cap"
        return None

    def act(self, d: Diagnosis, settings: dict, now: float) -> bool:
        """Cure, then roll back, unless held back; whether it acted."""
        if self.control is None:
            return False
        held = self._may_act(now)
        if held is not None:
            self.metrics.actions.labels(action=held).inc()
            self._log.info(held, "doctor: divergent, action held back (%s)", held.removeprefix("skipped_"))
            return False
        causes = ", ".join(f.cause for f in d.to_cure())
        changes = {k: v for k, v in d.cure().items() if k not in self.hands_off and not same(settings.get(k), v)}
        if changes:
            before = {k: settings.get(k) for k in changes}
            try:
                after_all = self.control.set(**changes)
            except (RequestError, RequestTimeout) as exc:
                # no rollback without the cure (the divergence would come back); not an action:
                # the next turn tries again
                self.metrics.errors.labels(reason="control").inc()
                self._log.error("control", "doctor: could not set %s, so no rollback either: %s", changes, exc)
                return False
            after = {k: after_all.get(k) for k in changes}
            for k, v in after.items():
                self.set_by_doctor[k], self.set_at[k] = v, now
            self.metrics.actions.labels(action="set").inc()
            self._record(now, "set", before, after, f"cure for {causes} ({d.why})", d.step)
        self.last_action = now
        self.action_times.append(now)
        try:
            done = self.control.rollback()
        except RequestTimeout as exc:
            self.metrics.errors.labels(reason="control").inc()
            self._record(now, "rollback_refused", {}, {}, f"no reply: {exc}", d.step)
        except RequestError as exc:   # "no_checkpoint": nothing healthy to go back to; the cure stands
            self.metrics.actions.labels(action="rollback_refused").inc()
            self._record(now, "rollback_refused", {}, {}, str(exc), d.step)
        else:
            self.metrics.actions.labels(action="rollback").inc()
            self._record(now, "rollback", {"step": done.get("from_step")},
                         {"step": done.get("to_step"), "checkpoint": done.get("checkpoint")}, d.why, d.step)
        return True

    def _record(self, now: float, action: str, before: dict, after: dict, why: str, step=None) -> None:
        entry = {"time": round(now, 3), "step": step, "action": action, "before": before, "after": after, "why": why}
        text = f"{action} {json.dumps(before)} -> {json.dumps(after)}: {why}"
        log.warning("doctor action: %s", text)
        self.actions.append({"when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now)), "text": text})
        try:
            self.actions_path.parent.mkdir(parents=True, exist_ok=True)
            with self.actions_path.open("a") as f:
                f.write(json.dumps(entry) + "\n")
        except OSError as exc:
            self.metrics.errors.labels(reason="write").inc()
            log.warning("doctor: cannot log the action to %s: %s", self.actions_path, exc.strerror or exc)
