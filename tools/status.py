"""`make status`: a live terminal view of the key training figures, read from Prometheus.

    python -m tools.status [--prometheus URL] [--interval S] [--once]

One row per refresh, like the incident's stats lines (frames, Q range, loss, grad norm and clip
ratio, DQN1M/5M and slopes, expert ratio, epsilon, target age, lr), plus the firing alerts and the
stability doctor's verdict with a link to its diagnosis (services/doctor; --doctor URL, default
$DOCTOR_URL or http://127.0.0.1:9105).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import urllib.parse
import urllib.request

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

QUERIES = {
    "frames": "sum(tempest_frames_total)",
    "frames/s": "sum(rate(tempest_frames_total[1m]))",
    "workers": "count(tempest_frames_total)",
    "replay": "max(tempest_replay_size)",
    "replay ratio": "max(tempest_replay_ratio)",
    "steps": "max(tempest_learner_steps_total)",
    "steps/s": "sum(rate(tempest_learner_steps_total[1m]))",
    "samples/s": "sum(rate(tempest_learner_samples_total[1m]))",
    "Q min": "min(tempest_learner_q_min)",
    "Q max": "max(tempest_learner_q_max)",
    "loss": "max(tempest_learner_loss)",
    "grad norm": "max(tempest_learner_grad_norm)",
    "clip ratio": "min(tempest_learner_grad_clip_ratio)",
    "lr": "max(tempest_learner_lr)",
    "target age": "max(tempest_learner_target_age_steps)",
    "DQN1M": 'max(tempest_dqn_reward_mean{window="1M"})',
    "DQN5M": 'max(tempest_dqn_reward_mean{window="5M"})',
    "5M slope": 'max(tempest_dqn_reward_slope{window="5M"})',
    "RwdSlope": "max(tempest_episode_reward_slope)",
    "expert": "max(tempest_expert_ratio)",
    "epsilon": "max(tempest_epsilon)",
    "non-finite": "max(tempest_learner_nonfinite_batches_total)",
}


def query(base: str, expr: str) -> float | None:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    data = json.load(urllib.request.urlopen(url, timeout=5))
    result = data["data"]["result"]
    return float(result[0]["value"][1]) if result else None


VERDICTS = {0.0: "healthy", 1.0: "divergent", -1.0: "not known yet"}


def doctor_line(base: str, doctor_url: str) -> str:
    """The doctor's verdict, its primary cause, and where its diagnosis is."""
    verdict = query(base, "max(tempest_doctor_verdict)")
    if verdict is None:
        return "doctor: no verdict in Prometheus (is the doctor running and scraped?)"
    said = VERDICTS.get(verdict, f"{verdict:g}")
    data = json.load(urllib.request.urlopen(f"{base}/api/v1/query?" + urllib.parse.urlencode(
        {"query": "topk(1, tempest_doctor_findings > 0)"}), timeout=5))["data"]["result"]
    if data:
        said += f" (primary cause: {data[0]['metric'].get('cause', '?')}, score {float(data[0]['value'][1]):.2f})"
    return f"doctor: {said}; diagnosis: {doctor_url.rstrip('/')}/diagnosis.md"


def alerts(base: str) -> list[str]:
    data = json.load(urllib.request.urlopen(f"{base}/api/v1/alerts", timeout=5))
    return [f"{a['labels']['alertname']} ({a['state']})" for a in data["data"]["alerts"]]


def fmt(name: str, v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if name in ("frames", "replay", "steps", "workers", "target age", "non-finite"):
        return f"{v:,.0f}"
    if name == "lr":
        return f"{v:.2e}"
    return f"{v:,.3f}" if abs(v) < 1000 else f"{v:,.0f}"


def snapshot(base: str, doctor_url: str = "http://127.0.0.1:9105") -> Group:
    table = Table(title=f"Tempest training  {time.strftime('%H:%M:%S')}  ({base})", show_lines=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, expr in QUERIES.items():
        table.add_row(name, fmt(name, query(base, expr)))
    firing = alerts(base)
    return Group(table, f"alerts: {', '.join(firing) if firing else 'none'}", doctor_line(base, doctor_url))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prometheus", default=os.environ.get("PROMETHEUS_URL", "http://127.0.0.1:9090"))
    ap.add_argument("--doctor", default=os.environ.get("DOCTOR_URL", "http://127.0.0.1:9105"),
                    help="the stability doctor's HTTP address (its diagnosis: /diagnosis.md)")
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--once", action="store_true", help="print one snapshot and exit")
    args = ap.parse_args(argv)
    console = Console()
    try:
        if args.once:
            console.print(snapshot(args.prometheus, args.doctor))
            return 0
        with Live(snapshot(args.prometheus, args.doctor), console=console, refresh_per_second=1) as live:
            while True:
                time.sleep(args.interval)
                live.update(snapshot(args.prometheus, args.doctor))
    except OSError as exc:
        print(f"cannot read Prometheus at {args.prometheus}: {exc} (is `make up` running?)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
