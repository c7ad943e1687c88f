"""The doctor's Prometheus side against a stand-in Prometheus HTTP API: the history reader
(services/doctor/history.py, prometheus_api.py), a clear error when Prometheus is away or refuses
a query, and `make status`'s doctor line (tools/status.py)."""
from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.doctor.history import METRICS, PrometheusHistory, settings_from_series
from services.doctor.prometheus_api import PrometheusAPI, PrometheusError
from tests.conftest import free_port
from tools.status import doctor_line

# PromQL -> result (a list of {"metric": labels, "values": [[t, "v"], ...]}, or "value" for instant)
ANSWERS = {
    "max(tempest_learner_q_max)": [{"metric": {}, "values": [[100, "1.5"], [105, "2500"], [110, "NaN"]]}],
    "max(tempest_learner_q_bound_upper)": [{"metric": {}, "values": [[100, "2000"], [110, "2000"]]}],
    "max by (name) (tempest_learner_setting)": [
        {"metric": {"name": "lr"}, "values": [[110, "0.003"]]},
        {"metric": {"name": "use_soft_target"}, "values": [[110, "1"]]},
        {"metric": {"name": "n_step"}, "values": [[110, "8"]]},
        {"metric": {"name": "not_a_setting_we_read"}, "values": [[110, "1"]]}],
    "max(tempest_doctor_verdict)": [{"metric": {}, "value": [110, "1"]}],
    "topk(1, tempest_doctor_findings > 0)": [{"metric": {"cause": "lr_too_high"}, "value": [110, "0.83"]}],
}


@pytest.fixture()
def prometheus():
    asked = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):   # noqa: N802
            url = urllib.parse.urlparse(self.path)
            q = urllib.parse.parse_qs(url.query)["query"][0]
            asked.append((url.path, q))
            if q == "bad(":
                body, code = {"status": "error", "errorType": "bad_data", "error": "parse error"}, 400
            else:
                kind = "matrix" if url.path.endswith("query_range") else "vector"
                body, code = {"status": "success", "data": {"resultType": kind, "result": ANSWERS.get(q, [])}}, 200
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", asked
    server.shutdown()


def test_the_history_comes_from_range_queries(prometheus):
    url, asked = prometheus
    series = PrometheusHistory(PrometheusAPI(url)).history(now=110, window_s=10)
    assert series["q_max"][:2] == [(100.0, 1.5), (105.0, 2500.0)] and str(series["q_max"][2][1]) == "nan"
    assert series["q_bound_upper"] == [(100.0, 2000.0), (110.0, 2000.0)]
    assert settings_from_series(series) == {"lr": 0.003, "use_soft_target": True, "n_step": 8}
    # one query per plain metric, one per labelled family
    plain = [n for n in METRICS if not n.startswith(("setting_", "changed_"))]
    assert len(asked) == len(plain) + 2 and all(path == "/api/v1/query_range" for path, _ in asked)


def test_prometheus_away_or_refusing_is_one_clear_error(prometheus):
    url, _ = prometheus
    with pytest.raises(PrometheusError, match=r"refused 'bad\(': parse error"):
        PrometheusAPI(url).query("bad(")
    away = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(PrometheusError, match=f"cannot read Prometheus at {away}"):
        PrometheusHistory(PrometheusAPI(away, timeout_s=1)).history(110, 10)


def test_status_shows_the_doctors_verdict_and_the_diagnosis_link(prometheus):
    url, _ = prometheus
    assert doctor_line(url, "http://127.0.0.1:9105") == (
        "doctor: divergent (primary cause: lr_too_high, score 0.83); diagnosis: http://127.0.0.1:9105/diagnosis.md")


def test_the_scrape_reader_keeps_what_it_read_over_the_window():
    """DOCTOR_SOURCE=scrape: each history() scrapes once; the window keeps the scrapes inside it."""
    from prometheus_client import CollectorRegistry, Gauge

    from services.doctor.history import ScrapeHistory, parse_exposition
    from services.doctor.server import serve
    registry = CollectorRegistry()
    q = Gauge("tempest_learner_q_max", "", registry=registry)
    setting = Gauge("tempest_learner_setting", "", ["name"], registry=registry)
    setting.labels(name="lr").set(0.003)
    server = serve("127.0.0.1", 0, lambda: "", registry)
    try:
        reader = ScrapeHistory([f"http://127.0.0.1:{server.server_address[1]}/metrics"])
        for t, value in ((100, 1.0), (105, 2500.0), (110, 7.0)):
            q.set(value)
            series = reader.history(now=t, window_s=8)
        assert series["q_max"] == [(105, 2500.0), (110, 7.0)]
        assert settings_from_series(series) == {"lr": 0.003}
    finally:
        server.shutdown()
    assert parse_exposition('# HELP x\nx_total{a="b"} 3\ny NaN\nz 1.5 1700000000\n') == \
        {'x_total{a="b"}': 3.0, "y": pytest.approx(float("nan"), nan_ok=True), "z": 1.5}
