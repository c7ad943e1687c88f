"""`make up`: the whole pipeline on this machine without Docker, as child processes of honcho.

    python -m tools.local_stack [--emulators N] [--run-dir DIR] [--port-offset K] [--dry-run]

Writes DIR/Procfile, DIR/prometheus.yml (prometheus/prometheus.local.yml with this run's ports)
and DIR/emulators.json (Prometheus' file-based discovery of the workers), prints where to look,
then runs honcho: an embedded redis-server (its own port, bounded memory, append-only
persistence in DIR/redis), Prometheus (DIR/prometheus), replay, expert, learner and N emulator
workers.  The environment passes through to every service (e.g. LR=0.0005 make up).  Ctrl-C
stops everything; the workers stop their MAME themselves.  --port-offset shifts every port, so
a second stack (or a test) can run beside the first.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = REPO / ".venv" / "bin" / "python"
PORTS = {"redis": 6390, "prometheus": 9090, "expert": 9102, "replay": 9103, "learner": 9104, "emulator": 9110,
         "replay_pull": 5555, "expert_zmq": 5556, "episodes": 5557, "weights": 5558, "control": 5559,
         "replay_zmq": 5560}


def ports_with(offset: int) -> dict[str, int]:
    return {k: v + offset for k, v in PORTS.items()}


def procfile(run: Path, p: dict[str, int]) -> str:
    redis = shutil.which("redis-server") or "/usr/bin/redis-server"
    prometheus = shutil.which("prometheus") or "/usr/bin/prometheus"
    tcp = lambda name: f"tcp://127.0.0.1:{p[name]}"  # noqa: E731
    # every service binds loopback under `make up`: ZeroMQ (tcp above) and /metrics (METRICS_ADDR)
    py = f"{PY} -m"
    worker_env = (f"REPLAY_ADDR={tcp('replay_pull')} LEARNER_EPISODES_ADDR={tcp('episodes')} "
                  f"EXPERT_ADDR={tcp('expert_zmq')} WEIGHTS_ADDR={tcp('weights')}")
    lines = {
        # honcho gives the first process type PORT=base, base+1, ... for its instances
        "emulator": f"exec env METRICS_ADDR=127.0.0.1 METRICS_PORT=$PORT WORKER_ID=emulator-$PORT EMULATOR_WORKDIR={run}/mame/$PORT "
                    f"{worker_env} {py} services.emulator.main",
        "redis": f"exec {redis} --port {p['redis']} --bind 127.0.0.1 --dir {run}/redis --appendonly yes "
                 f"--maxmemory {os.environ.get('REDIS_MAXMEMORY', '4gb')} --maxmemory-policy noeviction --save ''",
        "prometheus": f"exec {prometheus} --config.file={run}/prometheus.yml --storage.tsdb.path={run}/prometheus "
                      f"--web.listen-address=127.0.0.1:{p['prometheus']}",
        "replay": f"exec env METRICS_ADDR=127.0.0.1 METRICS_PORT={p['replay']} REDIS_URL=redis://127.0.0.1:{p['redis']}/0 "
                  f"REPLAY_PULL_BIND={tcp('replay_pull')} REPLAY_BIND={tcp('replay_zmq')} {py} services.replay.main",
        "expert": f"exec env METRICS_ADDR=127.0.0.1 METRICS_PORT={p['expert']} EXPERT_BIND={tcp('expert_zmq')} {py} services.expert.main",
        "learner": f"exec env METRICS_ADDR=127.0.0.1 METRICS_PORT={p['learner']} CHECKPOINT_DIR={run}/checkpoints "
                   f"REPLAY_ADDR={tcp('replay_zmq')} LEARNER_EPISODES_BIND={tcp('episodes')} "
                   f"WEIGHTS_BIND={tcp('weights')} CONTROL_BIND={tcp('control')} {py} services.learner.main",
    }
    return "".join(f"{name}: {cmd}\n" for name, cmd in lines.items())


def prometheus_config(run: Path, p: dict[str, int]) -> str:
    text = (REPO / "prometheus" / "prometheus.local.yml").read_text()
    for name in ("learner", "replay", "expert", "prometheus"):
        text = text.replace(f"127.0.0.1:{PORTS[name]}", f"127.0.0.1:{p[name]}")
    text = text.replace("rules/*.yml", str(REPO / "prometheus" / "rules" / "*.yml"))
    return text.replace("../run/emulators.json", str(run / "emulators.json"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--emulators", type=int, default=int(os.environ.get("EMULATORS", "1")))
    ap.add_argument("--run-dir", default=str(REPO / "run"))
    ap.add_argument("--port-offset", type=int, default=0)
    ap.add_argument("--dry-run", action="store_true", help="write the files and print, but do not start")
    args = ap.parse_args(argv)
    if not 0 <= args.emulators <= 64:
        print(f"EMULATORS={args.emulators} is out of range: allowed 0 <= value <= 64", file=sys.stderr)
        return 2
    run, p = Path(args.run_dir).resolve(), ports_with(args.port_offset)
    for sub in ("redis", "prometheus", "checkpoints", "mame"):
        (run / sub).mkdir(parents=True, exist_ok=True)
    targets = [f"127.0.0.1:{p['emulator'] + i}" for i in range(args.emulators)]
    (run / "emulators.json").write_text(json.dumps([{"targets": targets, "labels": {}}], indent=2) + "\n")
    (run / "prometheus.yml").write_text(prometheus_config(run, p))
    (run / "Procfile").write_text(procfile(run, p))
    prom = f"http://127.0.0.1:{p['prometheus']}"
    print(f"""Tempest local stack: {args.emulators} emulator worker(s), TEMPEST_ROMPATH={os.environ.get('TEMPEST_ROMPATH', '(unset)')}
  Prometheus      {prom}   alerts: {prom}/alerts
  learner metrics http://127.0.0.1:{p['learner']}/metrics   live settings: python -m services.learner.ctl --addr tcp://127.0.0.1:{p['control']} --token-file {run}/checkpoints/control-token get
  replay metrics  http://127.0.0.1:{p['replay']}/metrics   expert: http://127.0.0.1:{p['expert']}/metrics
  workers         {', '.join(f'http://{t}/metrics' for t in targets) or '(none)'}
  Redis           127.0.0.1:{p['redis']} (append-only files in {run}/redis)
  key figures     make status   (PROMETHEUS_URL={prom})
Ctrl-C stops everything.""", flush=True)
    if args.dry_run:
        return 0
    honcho = [str(REPO / ".venv" / "bin" / "honcho"), "-f", str(run / "Procfile"), "-d", str(REPO), "start",
              "-p", str(p["emulator"]), "-c", f"emulator={args.emulators}"]
    os.chdir(REPO)
    os.execv(honcho[0], honcho)


if __name__ == "__main__":
    sys.exit(main())
