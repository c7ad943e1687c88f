"""A thin client for Prometheus' HTTP API: instant and range queries, with a timeout and one clear
error when Prometheus is away or answers something else.

    api = PrometheusAPI("http://127.0.0.1:9090", timeout_s=5)
    api.query("max(tempest_learner_q_max)")                     # [(labels, (t, value))]
    api.query_range("max(tempest_learner_q_max)", t0, t1, 5)   # [(labels, [(t, value), ...])]

Every failure is a PrometheusError whose text says what and where in one line (the doctor logs it,
counts it in tempest_doctor_errors_total{reason="prometheus"} and carries on).
"""
from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request

Sample = tuple[float, float]


class PrometheusError(Exception):
    pass


def _value(raw: str) -> float:
    try:
        return float(raw)          # Prometheus sends "NaN", "+Inf", "-Inf" as strings, which float() reads
    except (TypeError, ValueError):
        return math.nan


class PrometheusAPI:
    def __init__(self, url: str, timeout_s: float = 5.0):
        self.url, self.timeout_s = url.rstrip("/"), timeout_s

    def _get(self, path: str, params: dict) -> dict:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as r:
                body = json.load(r)
        except urllib.error.HTTPError as exc:   # 400/422: a bad query; Prometheus says why in the body
            try:
                why = json.load(exc).get("error", exc.reason)
            except (ValueError, OSError):
                why = exc.reason
            raise PrometheusError(f"Prometheus at {self.url} refused {params.get('query')!r}: {why}") from None
        except (OSError, ValueError) as exc:    # refused, timed out, not JSON
            raise PrometheusError(f"cannot read Prometheus at {self.url}: {getattr(exc, 'reason', exc)}") from None
        if not isinstance(body, dict) or body.get("status") != "success":
            said = body.get("error", "no success") if isinstance(body, dict) else repr(body)[:200]
            raise PrometheusError(f"Prometheus at {self.url} answered {params.get('query')!r} with {said}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[tuple[dict, Sample]]:
        params = {"query": expr} if at is None else {"query": expr, "time": at}
        data = self._get("/api/v1/query", params)
        if data.get("resultType") != "vector":
            raise PrometheusError(f"{expr!r}: expected a vector, got {data.get('resultType')}")
        return [(r["metric"], (float(r["value"][0]), _value(r["value"][1]))) for r in data["result"]]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[tuple[dict, list[Sample]]]:
        data = self._get("/api/v1/query_range", {"query": expr, "start": start, "end": end, "step": step})
        if data.get("resultType") != "matrix":
            raise PrometheusError(f"{expr!r}: expected a matrix, got {data.get('resultType')}")
        return [(r["metric"], [(float(t), _value(v)) for t, v in r["values"]]) for r in data["result"]]
