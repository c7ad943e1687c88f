"""Fire drill for the stability doctor (issue 17): provoke the incident's divergence on a running
stack whose doctor is in auto mode, and watch the doctor catch it, roll back to the last healthy
checkpoint and cure it.  Every figure is in the learner's optimizer steps.

    DOCTOR_MODE=auto make up                                   # then, in another shell:
    .venv/bin/python -m tools.doctor_drill [--run-dir run] [--port-offset 0] [--keep-steps 1000]
    .venv/bin/python -m tools.doctor_drill --start-stack       # its own stack, on offset ports

The drill waits for WARM_STEPS steps and a healthy checkpoint of the run, then sets PROVOKE through
the control endpoint (the incident's settings: lr 0.05 constant, tau 1, no gradient clip, unpaced,
no margin loss), as a person might.  It polls the learner's and the doctor's /metrics and the
doctor's actions.jsonl.  After the doctor's rollback it judges Q (the learner's interval min and
max over its batches) against the learner's bound until --keep-steps more steps have been taken.
Progress goes to stderr; the last stdout line is one JSON object:
  provoked_at_step          the learner's run step when PROVOKE was set
  out_of_bound_at_step      the first step the drill saw Q out of its (widened) bound, or null
  detected_at_step          the step of the diagnosis the doctor acted on
  detect_steps              detected_at_step - provoked_at_step
  acted_at_step             the learner's step when the rollback was seen
  rollback_from_step, rollback_to_step, cure ({setting: value} the doctor set)
  q_peak                    the largest |Q| seen before the rollback
  kept_steps, kept_scrapes  steps (and scrapes judged) after the rollback with Q inside its bound
  q_after                   [lowest q_min, highest q_max] over those scrapes
  diagnosis                 the path of the diagnosis the doctor acted on
Exit status 1 when the doctor did not act within --timeout-s, or Q left its bound after the cure.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from services.doctor.findings import out_of_bound  # noqa: E402
from services.learner import checkpoint  # noqa: E402
from services.learner.control import ControlClient, read_control_token  # noqa: E402
from tools.local_stack import ports_with  # noqa: E402

WARM_STEPS = 300
# The incident (../shared/seed) as the issue provoked it, plus what today's defaults need besides
# to diverge: their cosine lr and DQfD margin loss hold Q at lr 0.01 (a 0.05 constant lr does not).
PROVOKE = {"lr": 0.05, "lr_schedule": "none", "tau": 1.0, "hard_target_refresh_every_steps": 0,
           "max_grad_norm": 0.0, "training_steps_per_sample": 0.0, "bc_weight": 0.0}
POLL_S = 0.5


def log(msg: str) -> None:
    print(f"[doctor-drill {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def scrape(port: int) -> dict[str, float]:
    """A service's /metrics on 127.0.0.1:port as {name{labels}: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


@dataclass
class Stack:
    """Where a local stack's parts are (tools/local_stack.py's layout)."""
    run_dir: Path
    port_offset: int = 0
    ports: dict = field(init=False)

    def __post_init__(self):
        self.ports = ports_with(self.port_offset)

    @property
    def actions_path(self) -> Path:
        return self.run_dir / "doctor" / "actions.jsonl"

    def learner(self) -> dict[str, float]:
        return scrape(self.ports["learner"])

    def doctor(self) -> dict[str, float]:
        return scrape(self.ports["doctor"])

    def control(self) -> ControlClient:
        token = read_control_token(self.run_dir / "checkpoints" / "control-token")
        return ControlClient(f"tcp://127.0.0.1:{self.ports['control']}", timeout_s=10, token=token)

    def actions(self) -> list[dict]:
        try:
            return [json.loads(line) for line in self.actions_path.read_text().splitlines() if line.strip()]
        except FileNotFoundError:
            return []


def wait(what: str, predicate, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            got = predicate()
        except OSError:   # a service not up yet, or restarting
            got = None
        if got:
            return got
        time.sleep(POLL_S)
    raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")


def q_of(m: dict[str, float]) -> tuple[float, float, tuple[float, float]] | None:
    """(q_min, q_max, bound) of one learner scrape; None before the first step or the bound."""
    try:
        lo, hi = m["tempest_learner_q_min"], m["tempest_learner_q_max"]
        bound = (m["tempest_learner_q_bound_lower"], m["tempest_learner_q_bound_upper"])
    except KeyError:
        return None
    return None if any(math.isnan(x) for x in bound) else (lo, hi, bound)


def healthy_checkpoint(stack: Stack) -> bool:
    return any(f.healthy for f in checkpoint.survey(stack.run_dir / "checkpoints"))


def drill(stack: Stack, keep_steps: int = 1000, settle_s: float = 20.0, timeout_s: float = 900.0) -> dict:
    """Run the drill on `stack` (its doctor in auto mode); the figures above as a dict."""
    mode = wait("the doctor's /metrics", stack.doctor, 120)
    if mode.get('tempest_doctor_mode{mode="auto"}') != 1.0:
        raise SystemExit("the doctor is not in auto mode: start the stack with DOCTOR_MODE=auto")
    wait(f"{WARM_STEPS} training steps", lambda: stack.learner().get("tempest_learner_steps_total", 0) >= WARM_STEPS,
         timeout_s)
    wait("a healthy checkpoint of the run", lambda: healthy_checkpoint(stack), timeout_s)
    acted_before = len(stack.actions())
    control = stack.control()
    try:
        provoked_at = int(stack.learner()["tempest_learner_step"])
        before = control.get()
        control.set(**PROVOKE)
        log(f"step {provoked_at}: provoked with {PROVOKE} (was "
            f"{ {k: before.get(k) for k in PROVOKE} })")
    finally:
        control.close()
    out: dict = {"provoked_at_step": provoked_at, "out_of_bound_at_step": None, "q_peak": 0.0}
    deadline = time.monotonic() + timeout_s
    rollback = None
    while rollback is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the doctor did not roll back within {timeout_s:.0f} s of the provocation "
                               f"(its actions: {stack.actions()[acted_before:]})")
        try:
            m = stack.learner()
        except OSError:
            m = {}
        q = q_of(m)
        if q is not None:
            out["q_peak"] = max(out["q_peak"], abs(q[0]) if math.isfinite(q[0]) else math.inf,
                                abs(q[1]) if math.isfinite(q[1]) else math.inf)
            if out["out_of_bound_at_step"] is None and out_of_bound(*q):
                out["out_of_bound_at_step"] = int(m["tempest_learner_step"])
                log(f"step {out['out_of_bound_at_step']}: Q [{q[0]:.3g}, {q[1]:.3g}] out of its bound {q[2]}")
        new = stack.actions()[acted_before:]
        rollback = next((a for a in new if a["action"] in ("rollback", "rollback_refused")), None)
        time.sleep(POLL_S)
    acted_at_time = time.time()
    sets = [a for a in new if a["action"] == "set"]
    out.update(detected_at_step=int(rollback["step"]), acted_at_step=int(stack.learner()["tempest_learner_step"]),
               cure={k: v for a in sets for k, v in a["after"].items()})
    out["detect_steps"] = out["detected_at_step"] - provoked_at
    if rollback["action"] == "rollback_refused":
        raise RuntimeError(f"the doctor's rollback was refused: {rollback['why']}")
    out.update(rollback_from_step=rollback["before"]["step"], rollback_to_step=rollback["after"]["step"])
    diagnoses = sorted((stack.run_dir / "doctor").glob("diagnosis-step-*.md"))
    out["diagnosis"] = str(diagnoses[-1]) if diagnoses else None
    log(f"step {out['acted_at_step']}: the doctor set {out['cure']} and rolled back from step "
        f"{out['rollback_from_step']} to {out['rollback_to_step']}; judging Q from {settle_s:.0f} s on "
        f"for {keep_steps} steps")
    out.update(keep_after_cure(stack, acted_at_time + settle_s, keep_steps, deadline))
    return out


def keep_after_cure(stack: Stack, since: float, keep_steps: int, deadline: float) -> dict:
    """Q judged at every scrape after `since` until keep_steps more steps: inside its bound."""
    while time.time() < since:
        time.sleep(POLL_S)
    first = stack.learner()["tempest_learner_steps_total"]
    lows, highs, scrapes, steps = [], [], 0, 0.0
    while steps < keep_steps:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {steps:.0f} of {keep_steps} steps after the cure within the drill's time")
        m = stack.learner()
        steps = m["tempest_learner_steps_total"] - first
        q = q_of(m)
        if q is not None:
            scrapes += 1
            lows.append(q[0])
            highs.append(q[1])
            if out_of_bound(*q):
                raise AssertionError(f"Q [{q[0]:.3g}, {q[1]:.3g}] out of its bound {q[2]} again, "
                                     f"{steps:.0f} steps after the cure")
        time.sleep(POLL_S)
    return {"kept_steps": int(steps), "kept_scrapes": scrapes, "q_after": [min(lows), max(highs)]}


# -- a stack of its own (--start-stack; the game test) ----------------------------------------------
# Short turns, so a drill takes minutes: the doctor every 5 s (Prometheus scrapes every 5 s), a
# checkpoint (health-marked) every 20 s, sampling from 2,000 transitions on.
DRILL_STACK_ENV = {"DOCTOR_MODE": "auto", "DOCTOR_INTERVAL_S": "5", "CHECKPOINT_EVERY_S": "20",
                   "MIN_SIZE_TO_SAMPLE": "2000"}


@contextlib.contextmanager
def own_stack(run_dir: Path, port_offset: int, **env: str):
    """tools/local_stack.py (one worker) with DRILL_STACK_ENV (+ env) in run_dir; Ctrl-C'd at the end."""
    run_dir.mkdir(parents=True, exist_ok=True)
    environ = dict(os.environ, PYTHONPATH=str(REPO), **DRILL_STACK_ENV, **env)
    proc = subprocess.Popen([sys.executable, "-m", "tools.local_stack", "--emulators", "1", "--run-dir", str(run_dir),
                             "--port-offset", str(port_offset)], cwd=REPO, env=environ, start_new_session=True,
                            stdout=open(run_dir / "stack.log", "ab"), stderr=subprocess.STDOUT)
    try:
        yield Stack(run_dir, port_offset)
    finally:
        proc.send_signal(signal.SIGINT)   # what Ctrl-C does: every service and MAME stop
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", help="the stack's run folder (default: make up's run/; with --start-stack a new "
                                      "temporary folder)")
    ap.add_argument("--port-offset", type=int, default=0, help="the stack's --port-offset")
    ap.add_argument("--start-stack", action="store_true",
                    help="start a stack of its own (DOCTOR_MODE=auto, one worker) in a fresh --run-dir")
    ap.add_argument("--keep-steps", type=int, default=1000, help="steps after the cure Q must stay inside its bound")
    ap.add_argument("--settle-s", type=float, default=20.0,
                    help="seconds after the rollback before Q is judged (the learner's and Prometheus' intervals)")
    ap.add_argument("--timeout-s", type=float, default=900.0)
    args = ap.parse_args(argv)
    if args.keep_steps < 1 or args.timeout_s <= 0 or args.settle_s < 0:
        ap.error("--keep-steps must be >= 1, --timeout-s > 0 and --settle-s >= 0")
    t0 = time.monotonic()
    try:
        if args.start_stack:
            run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="doctor-drill-"))
            offset = args.port_offset or 900
            log(f"starting a stack in {run_dir} on ports offset by {offset}")
            with own_stack(run_dir, offset) as stack:
                result = drill(stack, args.keep_steps, args.settle_s, args.timeout_s)
        else:
            result = drill(Stack(Path(args.run_dir or REPO / "run"), args.port_offset), args.keep_steps,
                           args.settle_s, args.timeout_s)
    except (TimeoutError, AssertionError, RuntimeError) as exc:
        log(f"drill failed: {exc}")
        return 1
    result["wall_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
