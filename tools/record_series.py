"""Record a real run's series, as the alert rules see them, for promtool tests on real noise.

    python -m tools.record_series --prometheus http://127.0.0.1:9090 --minutes 30 \\
        --name "healthy make up run" --out tests/data/recorded/healthy.yml [--expect-fires ALERT ...]

Queries Prometheus' HTTP API (query_range, at the scrape interval) for every series the rules in
prometheus/rules/tempest.yml select, over the last --minutes (or --start/--end, Unix seconds), and
writes them as promtool `input_series` (times shifted to start at 0, and so are the values of
*_time_seconds series; '_' where a series had no sample) with what the run is expected to show: every alert quiet (a healthy run), or the alerts
named by --expect-fires firing by the end.  tests/integration/test_recorded_runs.py replays each
recording through promtool against the current rules.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "prometheus" / "rules" / "tempest.yml"
PROMTOOL_SPECIAL = {"NaN": "NaN", "+Inf": "Inf", "-Inf": "-Inf"}


def rule_selectors(rules_path: Path = RULES) -> list[str]:
    """Every `tempest_...` selector the rules name, with its label matchers when it has them."""
    doc = yaml.safe_load(rules_path.read_text())
    found: set[str] = set()
    for rule in doc["groups"][0]["rules"]:
        found |= set(m.group(0) for m in re.finditer(r"(?<![\w:])tempest_[a-zA-Z0-9_]+(\{[^}]*\})?", rule["expr"]))
    bare = {s for s in found if "{" not in s}
    # a bare name already selects every series of it
    return sorted(bare | {s for s in found if s.split("{")[0] not in bare})


def query_range(prometheus: str, selector: str, start: float, end: float, step: float) -> list[dict]:
    url = f"{prometheus}/api/v1/query_range?" + urllib.parse.urlencode(
        {"query": selector, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(url, timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{selector}: {body.get('error')}")
    return body["data"]["result"]


def series_line(metric: dict[str, str]) -> str:
    name = metric.pop("__name__")
    labels = ",".join(f'{k}="{v}"' for k, v in sorted(metric.items()))
    return f"{name}{{{labels}}}" if labels else name


def record(prometheus: str, start: float, end: float, step: float) -> list[dict]:
    """promtool input_series for every rule selector between start and end."""
    n = int((end - start) // step) + 1
    out = []
    for selector in rule_selectors():
        for result in query_range(prometheus, selector, start, end, step):
            values = ["_"] * n
            # a Unix time moves with the recording: promtool's clock starts at 0 where it starts
            shift = start if result["metric"]["__name__"].endswith("_time_seconds") else 0.0
            for t, v in result["values"]:
                i = round((float(t) - start) / step)
                if 0 <= i < n:
                    values[i] = PROMTOOL_SPECIAL.get(v) or f"{float(v) - shift:.10g}"
            out.append({"series": series_line(dict(result["metric"])), "values": " ".join(values)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prometheus", default="http://127.0.0.1:9090")
    ap.add_argument("--minutes", type=float, default=30.0, help="the last N minutes (unless --start/--end)")
    ap.add_argument("--start", type=float, help="Unix seconds")
    ap.add_argument("--end", type=float, help="Unix seconds")
    ap.add_argument("--step", type=float, default=5.0, help="seconds between samples (the scrape interval)")
    ap.add_argument("--name", required=True, help="what the run was, for the test's name")
    ap.add_argument("--expect-fires", nargs="*", default=[], metavar="ALERT",
                    help="alerts that must fire by the end (none: a healthy run, every alert quiet)")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)
    end = args.end if args.end is not None else time.time()
    start = args.start if args.start is not None else end - args.minutes * 60
    if end <= start:
        ap.error("--end must be after --start")
    try:
        series = record(args.prometheus.rstrip("/"), start, end, args.step)
    except (OSError, RuntimeError) as exc:
        print(f"record_series: cannot read {args.prometheus}: {exc}", file=sys.stderr)
        return 1
    if not series:
        print(f"record_series: {args.prometheus} has none of the rules' series in that time", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"name": args.name, "recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(start)),
           "minutes": round((end - start) / 60, 1), "interval": f"{args.step:g}s",
           "expect_fires": args.expect_fires, "input_series": series}
    args.out.write_text(yaml.safe_dump(doc, sort_keys=False, width=1 << 20))
    print(f"record_series: {len(series)} series, {doc['minutes']} minutes -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
