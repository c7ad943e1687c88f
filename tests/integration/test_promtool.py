"""Integration: promtool checks the Prometheus files, and every PromQL query of the rules, the Grafana
alert rules and the dashboard runs against a real Prometheus (Debian's `prometheus`; `make setup`
installs it, CI has it)."""
from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, free_port, stop_process, wait_for

pytestmark = pytest.mark.integration

PROM_DIR = REPO / "prometheus"
GRAFANA = REPO / "grafana" / "provisioning"


def _binary(name: str) -> str:
    path = shutil.which(name) or f"/usr/bin/{name}"
    if not Path(path).exists():
        pytest.fail(f"{name} is not installed: `make setup` installs Debian's prometheus package")
    return path


def _promtool(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([_binary("promtool"), *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"promtool {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_rule_unit_tests_pass():
    out = _promtool("test", "rules", "prometheus/tests/tempest_test.yml")
    assert "SUCCESS" in out.stdout + out.stderr


def test_rules_are_valid():
    rule_files = sorted(str(p.relative_to(REPO)) for p in (PROM_DIR / "rules").glob("*.yml"))
    assert rule_files
    _promtool("check", "rules", *rule_files)


@pytest.mark.parametrize("config", ["prometheus/prometheus.yml", "prometheus/prometheus.local.yml"])
def test_config_is_valid(config):
    out = _promtool("check", "config", config)
    assert "rules/tempest.yml" in out.stdout + out.stderr, "the rule files should resolve"


def _all_queries() -> list[tuple[str, str]]:
    queries = []
    for rule in yaml.safe_load((PROM_DIR / "rules" / "tempest.yml").read_text())["groups"][0]["rules"]:
        queries.append((f"rule {rule['alert']}", rule["expr"]))
    for group in yaml.safe_load((GRAFANA / "alerting" / "tempest-alerts.yml").read_text())["groups"]:
        for rule in group["rules"]:
            for data in rule["data"]:
                if data["datasourceUid"] == "prometheus":
                    queries.append((f"grafana alert {rule['title']}", data["model"]["expr"]))
    dashboard = json.loads((GRAFANA / "dashboards" / "tempest.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queries.append((f"panel {panel['title']!r} {target['refId']}", target["expr"].replace("$run_id", ".*")))
    for mark in dashboard["annotations"]["list"]:
        queries.append((f"annotation {mark['name']!r}", mark["expr"]))
    return queries


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    """A real Prometheus on a free port evaluating our rules every second (nothing to scrape)."""
    tmp = tmp_path_factory.mktemp("prometheus")
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(PROM_DIR / "rules" / "*.yml")],
        "scrape_configs": [],
    }))
    port = free_port()
    log = open(tmp / "prometheus.log", "wb")
    proc = subprocess.Popen([_binary("prometheus"), f"--config.file={config}",
                             f"--web.listen-address=127.0.0.1:{port}", f"--storage.tsdb.path={tmp / 'data'}"],
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: urllib.request.urlopen(f"{base}/-/ready", timeout=2).status == 200, 30,
                 what="prometheus ready")
        yield base
    finally:
        stop_process(proc)
        log.close()


def _get(url: str) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # 400 = the query does not parse
        return json.loads(exc.read())


def test_every_query_runs_on_a_real_prometheus(prometheus):
    failures = []
    for where, expr in _all_queries():
        result = _get(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        if result.get("status") != "success":
            failures.append(f"{where}: {result.get('error')} in {expr}")
    assert not failures, "\n".join(failures)


def test_prometheus_evaluates_every_rule(prometheus):
    def healthy():
        groups = _get(f"{prometheus}/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return len(rules) == 9 and all(r["health"] == "ok" for r in rules) and rules

    rules = wait_for(healthy, 20, what="every rule evaluated with health ok")
    # Nothing is scraped, so the only alert that may be pending is "no worker produces frames".
    active = {r["name"] for r in rules if r["state"] != "inactive"}
    assert active <= {"TempestNoFrames"}, active
