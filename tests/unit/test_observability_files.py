"""Structure of the Prometheus and Grafana files (no Prometheus or Grafana server here).

The alert names and metric names are fixed by docs/design.md ("Metrics", "Alerts"); the PromQL itself runs
against a real Prometheus in tests/integration/test_promtool.py.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "prometheus" / "rules" / "tempest.yml"
RULE_TESTS = REPO / "prometheus" / "tests" / "tempest_test.yml"
GRAFANA = REPO / "grafana" / "provisioning"
DASHBOARD = GRAFANA / "dashboards" / "tempest.json"
GRAFANA_ALERTS = GRAFANA / "alerting" / "tempest-alerts.yml"

DESIGN_ALERTS = {
    "TempestQValueDivergence", "TempestQValueCollapse", "TempestPerformanceDeclining",
    "TempestLossDownPerformanceDown", "TempestGradNormUnstable", "TempestHeavyGradClipping",
    "TempestTargetAgeStuck", "TempestNonFiniteLoss", "TempestNoFrames",
}

# Every metric the rules and the dashboard may name (docs/design.md's, plus the workers' extra ones).
KNOWN_METRICS = {
    "tempest_learner_q_min", "tempest_learner_q_max", "tempest_learner_q_mean", "tempest_learner_loss",
    "tempest_learner_grad_norm", "tempest_learner_grad_clip_ratio", "tempest_learner_lr", "tempest_learner_bc_weight",
    "tempest_learner_target_age_steps", "tempest_learner_steps_total", "tempest_learner_samples_total",
    "tempest_learner_nonfinite_batches_total", "tempest_dqn_reward_mean", "tempest_dqn_reward_slope",
    "tempest_dqn_life_reward_mean", "tempest_dqn_evaluation_games", "tempest_dqn_evaluation_lives",
    "tempest_episode_reward_slope", "tempest_expert_ratio", "tempest_epsilon", "tempest_frames_total",
    "tempest_episodes_total", "tempest_replay_size", "tempest_replay_ratio", "tempest_emulator_video_fps",
    "tempest_emulator_frames_per_second", "tempest_mame_restarts_total", "tempest_messages_dropped_total",
    # issue 16: interval extremes, the run, settings, Q's bound and probe set
    "tempest_learner_loss_min", "tempest_learner_loss_max", "tempest_learner_grad_norm_min",
    "tempest_learner_grad_norm_max", "tempest_learner_grad_clip_ratio_min", "tempest_learner_grad_clip_ratio_max",
    "tempest_learner_target_clamped_share", "tempest_learner_interval_steps", "tempest_learner_target_distance",
    "tempest_learner_run_info", "tempest_learner_run_start_time_seconds", "tempest_learner_setting",
    "tempest_learner_setting_change_time_seconds", "tempest_learner_q_bound_lower", "tempest_learner_q_bound_upper",
    "tempest_learner_probe_q_min", "tempest_learner_probe_q_max", "tempest_learner_probe_q_mean",
    "tempest_replay_max_priority", "tempest_replay_priority_mean", "tempest_replay_new_priority",
    "tempest_replay_sampled_new_share",
    # issue 17: the stability doctor
    "tempest_doctor_verdict", "tempest_doctor_findings", "tempest_doctor_actions_total", "tempest_doctor_errors_total",
    "tempest_doctor_last_run_time_seconds", "tempest_doctor_mode",
    # a rollback quiets the collapse rule for an hour
    "tempest_learner_rollbacks_total",
}

# One dashboard panel per symptom: each of these must appear in some panel's query.
DASHBOARD_METRICS = [
    "tempest_learner_q_min", "tempest_learner_q_max", "tempest_learner_q_mean",  # Q range
    "tempest_learner_loss",
    "tempest_learner_grad_norm", "tempest_learner_grad_clip_ratio",
    "tempest_dqn_reward_mean", "tempest_dqn_reward_slope",  # DQN1M / DQN5M and the 5M slope
    "tempest_dqn_life_reward_mean", "tempest_dqn_evaluation_games", "tempest_dqn_evaluation_lives",  # per life, counts
    "tempest_episode_reward_slope",
    "tempest_frames_total", "tempest_emulator_video_fps",
    "tempest_replay_size", "tempest_replay_ratio",
    "tempest_expert_ratio", "tempest_epsilon",
    "tempest_learner_steps_total", "tempest_learner_samples_total",
    "tempest_learner_target_age_steps", "tempest_learner_lr", "tempest_learner_nonfinite_batches_total",
    "tempest_mame_restarts_total", "tempest_messages_dropped_total",
]


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"(?<![\w:])tempest_[a-zA-Z0-9_]+", expr))


def uses_metric(expr: str, name: str) -> bool:
    return re.search(rf"(?<![\w:]){re.escape(name)}(?![\w:])", expr) is not None


@pytest.fixture(scope="module")
def rules() -> dict[str, dict]:
    doc = load_yaml(RULES)
    assert len(doc["groups"]) == 1, "one rule group"
    out = {}
    for rule in doc["groups"][0]["rules"]:
        assert "alert" in rule, f"only alerting rules belong here: {rule}"
        assert rule["alert"] not in out, f"duplicate alert {rule['alert']}"
        out[rule["alert"]] = rule
    return out


@pytest.fixture(scope="module")
def grafana_rules() -> dict[str, dict]:
    doc = load_yaml(GRAFANA_ALERTS)
    assert doc["apiVersion"] == 1
    out = {}
    for group in doc["groups"]:
        assert group["orgId"] == 1 and group["name"] and group["folder"] and group["interval"]
        for rule in group["rules"]:
            assert rule["title"] not in out, f"duplicate Grafana rule {rule['title']}"
            out[rule["title"]] = rule
    return out


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(dash: dict) -> list[dict]:
    out = []
    for panel in dash["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # panels inside collapsed rows
    return out


# --- Prometheus rules ------------------------------------------------------------------------------

def test_every_design_alert_has_a_rule(rules):
    assert set(rules) == DESIGN_ALERTS


@pytest.mark.parametrize("alert", sorted(DESIGN_ALERTS))
def test_alert_has_severity_and_runbook(rules, alert):
    rule = rules[alert]
    assert rule["labels"]["severity"] in {"warning", "critical"}
    annotations = rule["annotations"]
    assert annotations.get("summary", "").strip(), f"{alert}: no summary"
    description = annotations.get("description", "")
    assert len(description) > 80, f"{alert}: the description should say what to do"
    assert "Action" in description, f"{alert}: the description should name the action to take"


def test_runbooks_name_the_live_settings_cli(rules):
    learner_alerts = DESIGN_ALERTS - {"TempestNoFrames"}
    for alert in learner_alerts:
        assert "python -m services.learner.ctl" in rules[alert]["annotations"]["description"], alert


@pytest.mark.parametrize("alert", sorted(DESIGN_ALERTS))
def test_rules_select_by_metric_name_alone(rules, alert):
    expr = rules[alert]["expr"]
    assert not re.search(r"\b(job|instance)\b", expr), f"{alert} names job/instance: {expr}"
    names = metric_names(expr)
    assert names, f"{alert}: no tempest_ metric in {expr}"
    assert names <= KNOWN_METRICS, f"{alert}: unknown metric(s) {names - KNOWN_METRICS}"


def test_the_incident_thresholds_are_as_designed(rules):
    assert "1000" in rules["TempestQValueDivergence"]["expr"]
    assert 'tempest_dqn_reward_slope{window="5M"}' in rules["TempestPerformanceDeclining"]["expr"]
    assert 'tempest_dqn_reward_slope{window="5M"}' in rules["TempestLossDownPerformanceDown"]["expr"]
    assert "tempest_learner_steps_total" in rules["TempestTargetAgeStuck"]["expr"]
    assert "absent(tempest_frames_total)" in rules["TempestNoFrames"]["expr"]


def test_promtool_tests_fire_and_spare_every_alert():
    doc = load_yaml(RULE_TESTS)
    assert doc["rule_files"] == ["../rules/tempest.yml"]
    fired, quiet = set(), set()
    for test in doc["tests"]:
        for case in test.get("alert_rule_test", []):
            (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert fired == DESIGN_ALERTS, f"no firing test for {DESIGN_ALERTS - fired}"
    assert quiet == DESIGN_ALERTS, f"no quiet test for {DESIGN_ALERTS - quiet}"
    names = {t.get("name") for t in doc["tests"]}
    assert {"incident", "healthy run"} <= names


# --- Grafana-managed alert rules ---------------------------------------------------------------------

def test_grafana_alerts_mirror_the_prometheus_rules(rules, grafana_rules):
    assert set(grafana_rules) == set(rules)
    for title, grule in grafana_rules.items():
        prom = rules[title]
        query = next(d for d in grule["data"] if d["datasourceUid"] == "prometheus")
        assert query["model"]["expr"] == prom["expr"], f"{title}: expr differs from the Prometheus rule"
        assert query["refId"] == query["model"]["refId"]
        assert grule["for"] == prom.get("for", "0m"), f"{title}: `for` differs"
        assert grule["labels"]["severity"] == prom["labels"]["severity"]


def test_grafana_alert_rules_are_well_formed(grafana_rules):
    uids = [r["uid"] for r in grafana_rules.values()]
    assert len(set(uids)) == len(uids)
    for title, rule in grafana_rules.items():
        assert 0 < len(rule["uid"]) <= 40 and re.fullmatch(r"[a-zA-Z0-9_-]+", rule["uid"]), title
        refs = [d["refId"] for d in rule["data"]]
        assert len(set(refs)) == len(refs), f"{title}: duplicate refIds"
        assert rule["condition"] in refs, f"{title}: condition {rule['condition']} is no refId"
        for d in rule["data"]:
            assert d["datasourceUid"] in {"prometheus", "__expr__"}, title
            assert d["model"]["refId"] == d["refId"], title
            if d["datasourceUid"] == "__expr__":
                assert d["model"]["type"] in {"reduce", "math", "threshold", "classic_conditions"}, title
        assert rule["noDataState"] == "OK", f"{title}: an empty result means the condition does not hold"
        assert rule["annotations"]["summary"].strip() and rule["annotations"]["description"].strip(), title


def test_grafana_alerts_link_to_dashboard_panels(grafana_rules, dashboard):
    ids = {str(p["id"]) for p in all_panels(dashboard)}
    for title, rule in grafana_rules.items():
        ann = rule["annotations"]
        assert ann["__dashboardUid__"] == dashboard["uid"], title
        assert ann["__panelId__"] in ids, title


def test_contact_point_comes_from_the_environment():
    doc = load_yaml(GRAFANA / "alerting" / "contact-points.yml")
    assert doc["apiVersion"] == 1
    names = {cp["name"] for cp in doc["contactPoints"]}
    settings = [r["settings"] for cp in doc["contactPoints"] for r in cp["receivers"]]
    assert any(re.fullmatch(r"\$\{?TEMPEST_ALERT_WEBHOOK_URL\}?", s.get("url", "")) for s in settings)
    assert doc["policies"] and all(p["receiver"] in names for p in doc["policies"])


# --- Grafana dashboard and provisioning --------------------------------------------------------------

def test_datasource_is_the_prometheus_service():
    doc = load_yaml(GRAFANA / "datasources" / "prometheus.yml")
    (ds,) = doc["datasources"]
    assert ds["uid"] == "prometheus" and ds["type"] == "prometheus"
    assert ds["url"] == "http://prometheus:9090"


def test_dashboard_provider_loads_this_folder():
    doc = load_yaml(GRAFANA / "dashboards" / "dashboards.yml")
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/etc/grafana/provisioning/dashboards"


def test_one_dashboard_with_unique_panel_ids(dashboard):
    assert sorted(p.name for p in DASHBOARD.parent.glob("*.json")) == ["tempest.json"]
    assert dashboard["uid"] == "tempest-training"
    ids = [p["id"] for p in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_every_target_uses_the_prometheus_datasource(dashboard):
    for panel in all_panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        refs = [t["refId"] for t in panel["targets"]]
        assert all(refs) and len(set(refs)) == len(refs), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "prometheus", panel["title"]
            assert target["expr"].strip(), panel["title"]
            # one Grafana variable, the run filter (tests/integration/test_promtool.py runs every query
            # with it as ".*"); no other: every query runs as it is against a real Prometheus
            assert "$" not in target["expr"].replace("$run_id", ""), panel["title"]
            assert metric_names(target["expr"]) <= KNOWN_METRICS, panel["title"]


@pytest.mark.parametrize("metric", DASHBOARD_METRICS)
def test_dashboard_shows_every_symptom(dashboard, metric):
    exprs = [t["expr"] for p in all_panels(dashboard) for t in p.get("targets", [])]
    assert any(uses_metric(e, metric) for e in exprs), f"no panel queries {metric}"


def test_dashboard_shows_dqn1m_dqn5m_and_per_worker_rates(dashboard):
    exprs = [t["expr"] for p in all_panels(dashboard) for t in p.get("targets", [])]
    assert 'tempest_dqn_reward_mean{window="1M"}' in exprs
    assert 'tempest_dqn_reward_mean{window="5M"}' in exprs
    assert 'tempest_dqn_reward_slope{window="5M"}' in exprs
    assert any(re.search(r"by \(instance\) \(rate\(tempest_frames_total\[", e) for e in exprs)
    assert any("rate(tempest_learner_steps_total[" in e for e in exprs)
    assert any("increase(tempest_learner_nonfinite_batches_total[" in e for e in exprs)


# --- Prometheus configs ------------------------------------------------------------------------------

def _jobs(doc: dict) -> dict[str, dict]:
    return {job["job_name"]: job for job in doc["scrape_configs"]}


def test_compose_config_scrapes_every_service():
    doc = load_yaml(REPO / "prometheus" / "prometheus.yml")
    assert doc["global"]["scrape_interval"] == "5s"
    assert doc["rule_files"] == ["rules/*.yml"]
    jobs = _jobs(doc)
    for job, target in {"learner": "learner:9104", "replay": "replay:9103", "expert": "expert:9102",
                        "doctor": "doctor:9105"}.items():
        assert jobs[job]["static_configs"][0]["targets"] == [target]
    (dns,) = jobs["emulator"]["dns_sd_configs"]
    assert dns["names"] == ["emulator"] and dns["type"] == "A" and dns["port"] == 9101


def test_local_config_scrapes_every_service():
    doc = load_yaml(REPO / "prometheus" / "prometheus.local.yml")
    assert doc["global"]["scrape_interval"] == "5s"
    assert doc["rule_files"] == ["rules/*.yml"]
    jobs = _jobs(doc)
    for job, port in {"learner": 9104, "replay": 9103, "expert": 9102, "doctor": 9105}.items():
        assert jobs[job]["static_configs"][0]["targets"] == [f"127.0.0.1:{port}"]
    (file_sd,) = jobs["emulator"]["file_sd_configs"]
    assert file_sd["files"] == ["../run/emulators.json"]  # written by `make up` (tools/local_stack.py)


def test_learner_panels_filter_by_the_run(dashboard):
    """The run variable lists the learner's run ids; learner panels keep the chosen run's times."""
    (var,) = dashboard["templating"]["list"]
    assert var["name"] == "run_id" and "tempest_learner_run_info" in var["query"]["query"]
    assert var["allValue"] == ".*"
    first_row = [p for p in all_panels(dashboard) if p["type"] != "row" and p["gridPos"]["y"] < 25]
    learner = [(p["title"], t["expr"]) for p in first_row for t in p["targets"] if "tempest_learner_" in t["expr"]]
    assert len(learner) >= 15
    for title, expr in learner:
        assert 'tempest_learner_run_info{run_id=~"$run_id"}' in expr, title
    (marks,) = dashboard["annotations"]["list"]
    assert "tempest_learner_setting_change_time_seconds" in marks["expr"]
