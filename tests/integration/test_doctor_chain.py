"""Integration (issue 17): the stability doctor on the real learner and replay processes (real
Redis), fed the chain MDP of the learner tests, judged in optimizer steps.

Every run first trains healthy (lr 0.001, tau 0.005, gamma 0.99: Q converges near 1, far inside
its bound [0, 100] for the reward settings the test's heartbeat reports: clip 1, no penalty, no
bonus) and writes healthy checkpoints every second.  Then one setting is made wrong, as a person
might, through the control endpoint:
  * lr_too_high:     lr 1.0 with the sane tau.  Adam moves every weight by ~1 at once: Q explodes
                     (the seed's 2,000 where 100 was possible), then the network collapses.
  * target_too_fast: tau 1 and a hard copy every step with the sane lr: the target is the online
                     network; Q climbs without end (thousands within a few hundred steps).
The doctor, reading the learner's and the replay's /metrics itself (DOCTOR_SOURCE=scrape), in
auto mode: detects it within DETECT_WITHIN_STEPS optimizer steps of the change, ranks the wrong
setting's cause first, applies its cure and rolls back; Q is then inside its bound for the next
KEEP_STEPS steps.  A run left healthy: no finding, no action, for as many steps.  The service
itself (a process, advise mode): its diagnosis on its HTTP port, and no action.  The default
history source, a real Prometheus, when one is installed.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request

import pytest
import yaml
import zmq
from prometheus_client import CollectorRegistry

from services.doctor.config import load_doctor_config
from services.doctor.doctor import Doctor
from services.doctor.findings import out_of_bound
from services.doctor.history import PrometheusHistory, ScrapeHistory
from services.doctor.metrics import DoctorMetrics
from services.doctor.prometheus_api import PrometheusAPI
from services.learner.control import ControlClient, read_control_token
from tempest_common.messages import Heartbeat
from tempest_common.wire import encode
from tests.conftest import free_port, scrape, start_service, stop_process, wait_for
from tests.integration.test_learner_service import send_chain, stack  # noqa: F401  (stack: the fixture)

pytestmark = pytest.mark.integration
GAMMA = 0.99
BOUND = (0.0, 100.0)           # clip 1 / (1 - 0.99); lower: -death_penalty = 0
WARM_STEPS = 600               # healthy training before the wrong setting (and healthy checkpoints)
DETECT_WITHIN_STEPS = 1500     # from the change to the doctor's "divergent"
KEEP_STEPS = 1000              # after the cure, Q inside its bound for this many steps
TICK_S = 0.25                  # the doctor's interval here
# The learner's Q, loss and gradient figures are aggregates over the steps of its last
# METRICS_INTERVAL_S: 2 s, several of the doctor's turns even on a loaded machine, so no step goes
# unseen (lr 1.0's explosion lasts well under a second before the network collapses); after an
# action the doctor judges Q from SETTLE_S on, when the aggregates hold post-rollback steps only.
METRICS_INTERVAL_S, SETTLE_S = 2.0, 2.5
SANE = {"LR": "0.001", "TAU": "0.005", "HARD_TARGET_REFRESH_EVERY_STEPS": "0", "GAMMA": str(GAMMA),
        "CHECKPOINT_EVERY_S": "1", "METRICS_INTERVAL_S": str(METRICS_INTERVAL_S), "PUBLISH_EVERY_STEPS": "20",
        "TORCH_THREADS": "1"}
WRONG = {"lr_too_high": {"lr": 1.0},
         "target_too_fast": {"tau": 1.0, "hard_target_refresh_every_steps": 1}}
CURED = {"lr_too_high": {"lr": 0.001},
         "target_too_fast": {"tau": 0.005, "hard_target_refresh_every_steps": 25_000}}


def start(stack, mode: str):   # noqa: F811
    p, sender, start_learner, tmp, _ = stack
    start_learner(**SANE)
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{p['episodes']}")
    # a worker's reward settings (scale, clip, death penalty, survival bonus): Q's bound is known
    # before the first step
    push.send(encode(Heartbeat("w1", 0, 0, 0.0, 0.0, time.time(), 0.01, 1.0, 0.0, 0.0)))
    wait_for(lambda: abs(scrape(p["lmetrics"])["tempest_learner_q_bound_upper"] - BOUND[1]) < 1e-6, 20,
             what="Q's bound")
    push.close(0)
    send_chain(sender, 400)
    token = read_control_token(tmp / "ckpt" / "control-token")
    control = ControlClient(f"tcp://127.0.0.1:{p['control']}", timeout_s=5, token=token)
    cfg = load_doctor_config({
        "DOCTOR_MODE": mode, "DOCTOR_SOURCE": "scrape", "METRICS_PORT": "0", "DOCTOR_DIR": str(tmp / "doctor"),
        "DOCTOR_SCRAPE_URLS": f"http://127.0.0.1:{p['lmetrics']}/metrics,http://127.0.0.1:{p['rmetrics']}/metrics",
        "DOCTOR_INTERVAL_S": str(TICK_S), "DOCTOR_WINDOW_S": "120", "DOCTOR_MEMORY_S": "5",
        "DOCTOR_SETTLE_S": str(SETTLE_S), "DOCTOR_COOLDOWN_S": "600", "DOCTOR_MAX_ACTIONS_PER_HOUR": "2"})
    registry = CollectorRegistry()
    doctor = Doctor(cfg, ScrapeHistory(cfg.scrape_list()), control, DoctorMetrics(registry))
    return p, tmp, control, doctor, registry


def step_of(p) -> int:
    return int(scrape(p["lmetrics"])["tempest_learner_step"])


def tick_until(doctor, p, predicate, max_step: int, what: str, timeout_s: float = 60):
    """Run the doctor every TICK_S until predicate(diagnosis) or the learner passes max_step."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        d = doctor.tick()
        if d is not None and predicate(d):
            return d
        if step_of(p) > max_step:
            break
        time.sleep(TICK_S)
    raise AssertionError(f"{what}: not by step {max_step} (now {step_of(p)}); last verdict "
                         f"{doctor.diagnosis.verdict if doctor.diagnosis else None}: "
                         f"{doctor.diagnosis.why if doctor.diagnosis else ''}")


def keep_healthy(doctor, p, steps: int, since: float | None = None) -> int:
    """Tick while the learner trains `steps` more steps: every verdict healthy, every Q sampled
    (after `since`) inside its bound; returns the scrapes judged."""
    end = step_of(p) + steps
    judged = 0
    deadline = time.monotonic() + 60
    while step_of(p) < end:
        assert time.monotonic() < deadline, f"the learner did not train {steps} steps in 60 s"
        d = doctor.tick()
        assert d is not None and d.verdict == "healthy" and not d.findings, (d.verdict, d.why)
        series = doctor.reader.history(time.time(), 120)
        for (t, lo), (_, hi) in zip(series["q_min"], series["q_max"]):
            if since is None or t > since:
                assert not out_of_bound(lo, hi, BOUND), f"Q [{lo}, {hi}] out of {BOUND} at {t}"
                judged += 1
        time.sleep(TICK_S)
    return judged


@pytest.mark.parametrize("cause", sorted(WRONG))
def test_a_divergence_is_detected_its_cause_ranked_first_and_cured(stack, cause):  # noqa: F811
    p, tmp, control, doctor, registry = start(stack, "auto")
    wait_for(lambda: step_of(p) >= WARM_STEPS, 60, what=f"{WARM_STEPS} healthy steps")
    keep_healthy(doctor, p, 100)
    wait_for(lambda: list((tmp / "ckpt").glob("checkpoint-*.pt")), 10, what="a healthy checkpoint")

    control.set(**WRONG[cause])
    changed_at = step_of(p)
    d = tick_until(doctor, p, lambda d: d.divergent, changed_at + DETECT_WITHIN_STEPS, f"{cause} detected")
    assert d.findings and d.findings[0].cause == cause, [(f.cause, round(f.score, 2)) for f in d.findings]
    print(f"{cause}: divergent at step {d.step:.0f}, {d.step - changed_at:.0f} steps after the change")
    assert registry.get_sample_value("tempest_doctor_findings", {"cause": cause}) == d.findings[0].score
    assert registry.get_sample_value("tempest_doctor_verdict") == 1

    # auto: the cure set, then the rollback, each logged with its before and after values
    acted_at = time.time()
    actions = [json.loads(line) for line in (tmp / "doctor" / "actions.jsonl").read_text().splitlines()]
    assert [a["action"] for a in actions] == ["set", "rollback"], actions
    assert actions[0]["before"] == {k: v for k, v in WRONG[cause].items()}
    assert actions[0]["after"] == CURED[cause]
    # back to the newest checkpoint the learner judged healthy (Q inside its bound since the one before)
    assert actions[1]["after"]["step"] < actions[1]["before"]["step"]
    assert actions[1]["after"]["checkpoint"].startswith("checkpoint-")
    live = control.get()
    assert all(live[k] == v for k, v in CURED[cause].items())
    for action in ("set", "rollback"):
        assert registry.get_sample_value("tempest_doctor_actions_total", {"action": action}) == 1
    report = (tmp / "doctor" / "diagnosis.md").read_text()
    assert "## Root Cause Analysis" in report and "python -m services.learner.ctl rollback" in report

    time.sleep(SETTLE_S)
    judged = keep_healthy(doctor, p, KEEP_STEPS, since=acted_at + SETTLE_S)
    assert judged >= 5
    assert registry.get_sample_value("tempest_doctor_actions_total", {"action": "set"}) == 1, "no second action"
    control.close()


def test_a_healthy_run_gets_no_finding_and_no_action(stack):  # noqa: F811
    p, tmp, control, doctor, registry = start(stack, "auto")
    wait_for(lambda: step_of(p) >= 100, 60, what="training")
    judged = keep_healthy(doctor, p, WARM_STEPS + DETECT_WITHIN_STEPS)
    assert judged >= 10
    assert registry.get_sample_value("tempest_doctor_verdict") == 0
    assert not (tmp / "doctor" / "actions.jsonl").exists()
    assert sum(registry.get_sample_value("tempest_doctor_actions_total", {"action": a}) for a in
               ("set", "rollback", "rollback_refused")) == 0
    assert (tmp / "doctor" / "diagnosis.md").read_text().startswith("# Training Stability - Step ")
    control.close()


def test_the_service_in_advise_mode_serves_its_diagnosis_and_does_not_act(stack):  # noqa: F811
    """services.doctor.main as a process (DOCTOR_SOURCE=scrape): the diagnosis on its HTTP port and
    in DOCTOR_DIR, its verdict in /metrics; in advise mode the settings stay as they are."""
    p, tmp, control, _, _ = start(stack, "advise")
    port = free_port()
    doctor = start_service("services.doctor.main", {
        "DOCTOR_MODE": "advise", "DOCTOR_SOURCE": "scrape", "METRICS_PORT": str(port), "METRICS_ADDR": "127.0.0.1",
        "DOCTOR_SCRAPE_URLS": f"http://127.0.0.1:{p['lmetrics']}/metrics,http://127.0.0.1:{p['rmetrics']}/metrics",
        "DOCTOR_INTERVAL_S": str(TICK_S), "DOCTOR_DIR": str(tmp / "doctor"), "DOCTOR_MEMORY_S": "5",
        "CONTROL_ADDR": f"tcp://127.0.0.1:{p['control']}", "CHECKPOINT_DIR": str(tmp / "ckpt")}, tmp / "doctor.log")
    try:
        wait_for(lambda: step_of(p) >= WARM_STEPS, 60, what=f"{WARM_STEPS} healthy steps")
        wait_for(lambda: scrape(port)["tempest_doctor_verdict"] == 0, 20, what="a healthy verdict")
        control.set(**WRONG["target_too_fast"])
        wait_for(lambda: scrape(port)["tempest_doctor_verdict"] == 1, 30, what="a divergent verdict")
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/diagnosis.md", timeout=5).read().decode()
        assert "### Primary Cause: Target network updated too fast" in text, text
        assert "python -m services.learner.ctl set tau=0.005 hard_target_refresh_every_steps=25000" in text
        assert scrape(port)['tempest_doctor_findings{cause="target_too_fast"}'] > 0.5
        assert (tmp / "doctor" / "diagnosis.md").exists()
        live = control.get()
        assert live["tau"] == 1.0 and live["hard_target_refresh_every_steps"] == 1, "advise never acts"
        assert scrape(port)['tempest_doctor_actions_total{action="set"}'] == 0
    finally:
        stop_process(doctor)
        control.close()
    assert doctor.returncode == 0 and "Traceback" not in (tmp / "doctor.log").read_text()


@pytest.mark.skipif(not shutil.which("prometheus"), reason="prometheus not installed (make setup installs it)")
def test_the_default_source_reads_the_same_history_from_a_real_prometheus(stack, tmp_path):  # noqa: F811
    """DOCTOR_SOURCE=prometheus (the service's default): a real Prometheus scrapes the learner and
    the replay every second; the doctor's range queries find the divergence and rank its cause."""
    p, tmp, control, _, _ = start(stack, "advise")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    targets = [f"127.0.0.1:{p['lmetrics']}", f"127.0.0.1:{p['rmetrics']}"]
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                                      "scrape_configs": [{"job_name": "tempest",
                                                          "static_configs": [{"targets": targets}]}]}))
    prom = subprocess.Popen([shutil.which("prometheus"), f"--config.file={config}",
                             f"--web.listen-address=127.0.0.1:{port}", f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: urllib.request.urlopen(f"{url}/-/ready", timeout=2).status == 200, 30, what="Prometheus")
        cfg = load_doctor_config({"DOCTOR_MODE": "advise", "PROMETHEUS_URL": url, "METRICS_PORT": "0",
                                  "DOCTOR_DIR": str(tmp / "doctor-prom"), "DOCTOR_WINDOW_S": "120",
                                  "DOCTOR_MEMORY_S": "10"})
        doctor = Doctor(cfg, PrometheusHistory(PrometheusAPI(url), step_s=1.0), control,
                        DoctorMetrics(CollectorRegistry()))
        wait_for(lambda: step_of(p) >= WARM_STEPS, 60, what=f"{WARM_STEPS} healthy steps")
        wait_for(lambda: (doctor.tick() or doctor.diagnosis).verdict == "healthy", 20, interval=1,
                 what="a healthy verdict from Prometheus' history")
        control.set(**WRONG["target_too_fast"])
        d = wait_for(lambda: (lambda d: d if d is not None and d.divergent else None)(doctor.tick()), 30,
                     interval=1, what="a divergent verdict from Prometheus' history")
        assert d.findings[0].cause == "target_too_fast"
        assert d.settings["tau"] == 1.0 and "Step " in d.symptoms[0].lines[0]
        assert any("tau 0.005 -> 1" in line for s in d.symptoms for line in s.lines), "the change, from the series"
    finally:
        prom.terminate()
        prom.wait(15)
        control.close()
