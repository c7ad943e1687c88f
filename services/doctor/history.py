"""Where the doctor's metric history comes from: Prometheus (the service's default) or the
services' own /metrics scraped directly over time (DOCTOR_SOURCE=scrape: no Prometheus needed, what
the integration tests use).  Both give the same thing, {name: [(t, value), ...]} over a window, the
names of METRICS, so the diagnosis (findings.py) cannot tell them apart.

    reader = PrometheusHistory(PrometheusAPI(url))      # or ScrapeHistory([learner_url, replay_url])
    series = reader.history(now=time.time(), window_s=600)

One learner and one replay per run: the Prometheus reader aggregates over series with max / min
(whichever is the worse side for the diagnosis), the scraping reader reads the plain sample.
"""
from __future__ import annotations

import math
import re
import urllib.request
from collections import deque
from typing import Protocol

from .prometheus_api import PrometheusAPI

Series = list[tuple[float, float]]

# The live settings the diagnosis reads, also exported by the learner as tempest_learner_setting{name}:
# when its control endpoint does not answer, the doctor reads them from there (numbers; booleans 0/1).
SETTING_NAMES = ("lr", "tau", "use_soft_target", "hard_target_refresh_every_steps", "n_step", "gamma",
                 "training_steps_per_sample", "batch_size", "gradient_accumulation_steps", "max_grad_norm",
                 "clamp_targets", "prioritized", "expert_ratio_min")
BOOL_SETTINGS = ("use_soft_target", "clamp_targets", "prioritized")
INT_SETTINGS = ("hard_target_refresh_every_steps", "n_step", "batch_size", "gradient_accumulation_steps")


def _m(agg: str, metric: str) -> tuple[str, str]:
    return f"{agg}({metric})", metric


# name -> (PromQL for PrometheusHistory, sample name in the exposition for ScrapeHistory)
METRICS: dict[str, tuple[str, str]] = {
    "q_max": _m("max", "tempest_learner_q_max"), "q_min": _m("min", "tempest_learner_q_min"),
    "q_bound_lower": _m("min", "tempest_learner_q_bound_lower"),
    "q_bound_upper": _m("max", "tempest_learner_q_bound_upper"),
    "probe_q_max": _m("max", "tempest_learner_probe_q_max"), "probe_q_min": _m("min", "tempest_learner_probe_q_min"),
    "loss": _m("max", "tempest_learner_loss"),
    "grad_norm": _m("max", "tempest_learner_grad_norm"), "grad_norm_min": _m("min", "tempest_learner_grad_norm_min"),
    "grad_norm_max": _m("max", "tempest_learner_grad_norm_max"),
    "grad_clip_ratio": _m("min", "tempest_learner_grad_clip_ratio"),
    "lr": _m("max", "tempest_learner_lr"), "target_distance": _m("min", "tempest_learner_target_distance"),
    "target_age": _m("max", "tempest_learner_target_age_steps"),
    "target_clamped_share": _m("max", "tempest_learner_target_clamped_share"),
    "step": _m("max", "tempest_learner_step"), "global_frames": _m("max", "tempest_learner_global_frames"),
    "expert_ratio": _m("max", "tempest_expert_ratio"),
    "max_priority": _m("max", "tempest_replay_max_priority"),
    "priority_mean": _m("max", "tempest_replay_priority_mean"),
    "new_priority": _m("max", "tempest_replay_new_priority"),
    "sampled_new_share": _m("max", "tempest_replay_sampled_new_share"),
    "replay_ratio": _m("max", "tempest_replay_ratio"),
    **{f"setting_{n}": (f'max(tempest_learner_setting{{name="{n}"}})', f'tempest_learner_setting{{name="{n}"}}')
       for n in SETTING_NAMES},
    # when each was last changed (Unix time): a change after the doctor's action is a person's
    **{f"changed_{n}": (f'max(tempest_learner_setting_change_time_seconds{{name="{n}"}})',
                        f'tempest_learner_setting_change_time_seconds{{name="{n}"}}') for n in SETTING_NAMES},
}


LABELLED_FAMILIES = {"setting_": "tempest_learner_setting", "changed_": "tempest_learner_setting_change_time_seconds"}
LABELLED = tuple(LABELLED_FAMILIES)


class HistoryReader(Protocol):
    def history(self, now: float, window_s: float) -> dict[str, Series]:
        """{name: [(t, value), ...] oldest first} of METRICS over (now - window_s, now]; a name with
        no data is absent.  Raises OSError-like errors (PrometheusError) when its source is away."""


def settings_from_series(series: dict[str, Series]) -> dict:
    """The live settings the learner exported last (SETTING_NAMES), typed as the control endpoint gives them."""
    out: dict = {}
    for name in SETTING_NAMES:
        samples = series.get(f"setting_{name}")
        if not samples or math.isnan(samples[-1][1]):
            continue
        v = samples[-1][1]
        out[name] = bool(v) if name in BOOL_SETTINGS else int(v) if name in INT_SETTINGS else float(v)
    return out


class PrometheusHistory:
    def __init__(self, api: PrometheusAPI, step_s: float = 5.0, max_points: int = 240):
        """step_s: Prometheus' scrape interval (finer steps only repeat samples); a longer window
        is read at a coarser step, at most max_points a series."""
        self.api, self.step_s, self.max_points = api, step_s, max_points

    def history(self, now: float, window_s: float) -> dict[str, Series]:
        step = max(self.step_s, window_s / self.max_points)
        out = {}
        for name, (expr, _) in METRICS.items():
            if name.startswith(LABELLED):
                continue
            result = self.api.query_range(expr, now - window_s, now, step)
            if result:
                out[name] = result[0][1]
        # the per-setting families in one query each, split by their name label
        for prefix, metric in LABELLED_FAMILIES.items():
            for labels, samples in self.api.query_range(f"max by (name) ({metric})", now - window_s, now, step):
                if labels.get("name") in SETTING_NAMES:
                    out[f"{prefix}{labels['name']}"] = samples
        return out


_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)(?: \d+)?$")


def parse_exposition(text: str) -> dict[str, float]:
    """Prometheus text format -> {'name{labels}': value} (labels as the service wrote them)."""
    out = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            try:
                out[m.group(1)] = float(m.group(2))
            except ValueError:
                continue
    return out


class ScrapeHistory:
    """Scrapes each URL's /metrics at every history() call and keeps what it read (at most
    `keep` scrapes), so the history grows over time as Prometheus' would."""

    def __init__(self, urls: list[str], timeout_s: float = 5.0, keep: int = 2000):
        self.urls, self.timeout_s = list(urls), timeout_s
        self.scrapes: deque[tuple[float, dict[str, float]]] = deque(maxlen=keep)

    def scrape(self, now: float) -> None:
        """Read every URL once; keep the METRICS samples only (a learner exports hundreds)."""
        merged: dict[str, float] = {}
        for url in self.urls:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as r:
                merged.update(parse_exposition(r.read().decode()))
        self.scrapes.append((now, {name: merged[key] for name, (_, key) in METRICS.items() if key in merged}))

    def history(self, now: float, window_s: float) -> dict[str, Series]:
        self.scrape(now)
        out: dict[str, Series] = {}
        for t, sample in self.scrapes:
            if t > now - window_s:
                for name, value in sample.items():
                    out.setdefault(name, []).append((t, value))
        return out


# --- recordings (tools/record_series.py: promtool input_series) -------------------------------------

def expand_promtool(values: str) -> list[float | None]:
    """promtool's series notation -> one value per interval (None: '_', no sample): 'a', '_',
    'axN' / 'a+bxN' / 'a-bxN' (a, then N more steps of b), '_xN', 'stale'."""
    out: list[float | None] = []
    for token in values.split():
        if token in ("_", "stale"):
            out.append(None)
            continue
        m = re.fullmatch(r"(_|[-+]?[^x+\-]+(?:e[-+]?\d+)?)(?:([-+])([^x]+))?x(\d+)", token)
        if m is None:
            out.append(float(token))
            continue
        start, sign, step, n = m.groups()
        if start == "_":
            out.extend([None] * (int(n) + 1))
            continue
        a, b = float(start), float(step or 0) * (-1 if sign == "-" else 1)
        out.extend(a + b * i for i in range(int(n) + 1))
    return out


def _without_target_labels(series: str) -> str:
    """'name{instance="..",job="..",name="lr"}' -> 'name{name="lr"}' (Prometheus adds the target's
    labels; the services' own expositions, which METRICS names, do not have them)."""
    name, _, labels = series.replace(" ", "").partition("{")
    kept = [kv for kv in re.findall(r'\w+="(?:[^"\\]|\\.)*"', labels) if kv.split("=")[0] not in ("instance", "job")]
    return f"{name}{{{','.join(kept)}}}" if kept else name


def history_from_recording(doc: dict, start: float = 0.0) -> dict[str, Series]:
    """A recording's input_series as the doctor's history, sample i at start + i x interval.  The
    run's step falls back to the learner's steps_total, the frames are the sum of the workers'
    tempest_frames_total."""
    interval = float(re.fullmatch(r"([\d.]+)s", doc["interval"]).group(1))
    by_key: dict[str, list] = {}
    for s in doc["input_series"]:   # the first series of each metric (one learner, one replay)
        by_key.setdefault(_without_target_labels(s["series"]), expand_promtool(str(s["values"])))
    out: dict[str, Series] = {}

    def put(name: str, values: list) -> None:
        samples = [(start + i * interval, v) for i, v in enumerate(values) if v is not None]
        if samples:
            out[name] = samples
    for name, (_, key) in METRICS.items():
        if key in by_key:
            put(name, by_key[key])
    if "step" not in out and "tempest_learner_steps_total" in by_key:
        put("step", by_key["tempest_learner_steps_total"])
    frames = [v for k, v in by_key.items() if k.split("{")[0] == "tempest_frames_total"]
    if frames and "global_frames" not in out:
        n = max(len(v) for v in frames)
        summed = [None if all(i >= len(v) or v[i] is None for v in frames) else
                  sum(v[i] for v in frames if i < len(v) and v[i] is not None) for i in range(n)]
        put("global_frames", summed)
    return out
