"""Game + integration tier: `make up`'s stack (tools/local_stack.py) on the real game, scraped by a
real Prometheus; every PromQL expression of the dashboard and the rules evaluates, and the
dashboard's are fed by the running services.  Ctrl-C (SIGINT) stops everything, MAME included."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from tests.conftest import REPO, children, free_port, pid_alive, wait_for
from tests.integration.test_promtool import _all_queries

pytestmark = [pytest.mark.game, pytest.mark.integration]


def api(base: str, path: str, **params) -> dict:
    url = f"{base}/api/v1/{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
    return json.load(urllib.request.urlopen(url, timeout=10))


def descendants(pid: int) -> list[int]:
    out = []
    for child in children(pid):
        out += [child, *descendants(child)]
    return out


def pick_offset() -> int:
    from tools.local_stack import PORTS
    for offset in range(20000, 40000, 737):
        try:
            for port in PORTS.values():
                import socket
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port + offset))
            return offset
        except OSError:
            continue
    pytest.fail("no free block of ports for the local stack")


def test_local_stack_end_to_end(rompath, tmp_path):
    offset = pick_offset()
    prom = f"http://127.0.0.1:{9090 + offset}"
    env = dict(os.environ, TEMPEST_ROMPATH=rompath, PYTHONPATH=str(REPO), MIN_SIZE_TO_SAMPLE="300",
               BATCH_SIZE="64", PUBLISH_EVERY_STEPS="5", CHECKPOINT_EVERY_S="600", REDIS_MAXMEMORY="256mb")
    log = open(tmp_path / "stack.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "tools.local_stack", "--emulators", "1", "--run-dir",
                             str(tmp_path / "run"), "--port-offset", str(offset)], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        def targets_up():
            active = api(prom, "targets")["data"]["activeTargets"]
            jobs = {t["labels"]["job"]: t["health"] for t in active}
            return all(jobs.get(j) == "up" for j in ("learner", "replay", "expert", "emulator", "prometheus"))
        wait_for(targets_up, 90, interval=1, what="every service up in Prometheus")
        wait_for(lambda: api(prom, "query", query="max(tempest_learner_steps_total)")["data"]["result"]
                 and float(api(prom, "query", query="max(tempest_learner_steps_total)")["data"]["result"][0]["value"][1]) > 0,
                 120, interval=2, what="the learner training on the workers' transitions")
        time.sleep(12)  # two more scrapes, so rate() and increase() have points
        dashboard = json.loads((REPO / "grafana/provisioning/dashboards/tempest.json").read_text())
        panel_exprs = [t["expr"].replace("$run_id", ".*")   # the run filter at "All"
                       for p in dashboard["panels"] for t in p.get("targets", []) if "expr" in t]
        empty = []
        for expr in panel_exprs:
            res = api(prom, "query", query=expr)
            assert res["status"] == "success", expr
            if not res["data"]["result"]:
                empty.append(expr)
        assert not empty, f"dashboard queries with no data from the running stack: {empty}"
        for name, expr in _all_queries():
            assert api(prom, "query", query=expr)["status"] == "success", name
        status = subprocess.run([sys.executable, "-m", "tools.status", "--once", "--prometheus", prom], cwd=REPO,
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and "frames/s" in status.stdout, status.stderr
    finally:
        procs = descendants(proc.pid)
        mame = [p for p in procs if "mame" in open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace")] \
            if procs else []
        proc.send_signal(signal.SIGINT)  # what Ctrl-C does
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                for p in [proc.pid, *procs]:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except OSError:
                        pass
        log.close()
    assert mame, "the stack ran a MAME"
    wait_for(lambda: not any(pid_alive(p) for p in procs), 15, what="every service and MAME to exit")
