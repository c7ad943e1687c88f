"""`make up`: the whole pipeline on this machine without Docker, supervised by supervisord.

    python -m tools.local_stack [--emulators N] [--run-dir DIR] [--port-offset K] [--dry-run]

Writes DIR/supervisord.conf, DIR/prometheus.yml (prometheus/prometheus.local.yml with this run's
ports) and DIR/emulators.json (Prometheus' file-based discovery of the workers), prints where to
look, then runs supervisord in the foreground: an embedded redis-server (its own port, bounded
memory, append-only persistence in DIR/redis), Prometheus (DIR/prometheus), replay, expert,
learner and N emulator workers.  The environment passes through to every service (e.g.
LR=0.0005 make up).  Each service logs to DIR/logs/<name>.log; the terminal shows supervisord's
own lines (started, exited, restarted).

Supervision (why not honcho: it stopped the whole stack when any child exited, and its 5 s kill
cut the replay's flush to Redis):
  - a service that exits or is killed restarts alone; the others keep running.  One that dies
    within START_SECS of starting is retried with a growing delay (supervisord's back-off: 1 s,
    2 s, 3 s, ...) and given up after START_RETRIES such failures in a row (state FATAL);
  - Ctrl-C (SIGINT to supervisord) stops everything, in reverse start order: the workers first
    (each stops its MAME; the signal goes to the worker's whole process group, MAME included),
    then the learner (final checkpoint), expert, replay (flush), Prometheus, Redis last, each
    given STOP_WAIT_S seconds before it is killed;
  - `.venv/bin/supervisorctl -c DIR/supervisord.conf status` (or restart NAME, tail -f NAME)
    talks to the running stack over DIR/supervisor.sock.
--port-offset shifts every port, so a second stack (or a test) can run beside the first.
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
PORTS = {"redis": 6390, "prometheus": 9090, "expert": 9102, "replay": 9103, "learner": 9104, "doctor": 9105,
         "emulator": 9110,
         "replay_pull": 5555, "expert_zmq": 5556, "episodes": 5557, "weights": 5558, "control": 5559,
         "replay_zmq": 5560}
START_SECS = 5        # up this long = started; a death sooner is a failed start (back-off)
START_RETRIES = 10    # failed starts in a row before supervisord gives a service up (FATAL)
# Start order (stopped in reverse) and the seconds each may take to stop before it is killed.
PRIORITY = {"redis": 10, "prometheus": 20, "replay": 30, "expert": 40, "learner": 50, "emulator": 60, "doctor": 70}
STOP_WAIT_S = {"redis": 10, "prometheus": 10, "replay": 60, "expert": 5, "learner": 60, "emulator": 15, "doctor": 10}


def ports_with(offset: int) -> dict[str, int]:
    return {k: v + offset for k, v in PORTS.items()}


def programs(run: Path, p: dict[str, int], emulators: int) -> dict[str, tuple[list[str], dict[str, str]]]:
    """name -> (argv, extra environment) of every process of the stack."""
    redis = shutil.which("redis-server") or "/usr/bin/redis-server"
    prometheus = shutil.which("prometheus") or "/usr/bin/prometheus"
    tcp = lambda name: f"tcp://127.0.0.1:{p[name]}"  # noqa: E731
    service = lambda module: [str(PY), "-m", module]  # noqa: E731
    loopback = {"METRICS_ADDR": "127.0.0.1"}   # every service binds loopback under `make up`
    out = {
        "redis": ([redis, "--port", str(p["redis"]), "--bind", "127.0.0.1", "--dir", f"{run}/redis",
                   "--appendonly", "yes", "--maxmemory", os.environ.get("REDIS_MAXMEMORY", "4gb"),
                   "--maxmemory-policy", "noeviction", "--save", ""], {}),
        "prometheus": ([prometheus, f"--config.file={run}/prometheus.yml", f"--storage.tsdb.path={run}/prometheus",
                        f"--web.listen-address=127.0.0.1:{p['prometheus']}"], {}),
        "replay": (service("services.replay.main"),
                   {**loopback, "METRICS_PORT": str(p["replay"]), "REDIS_URL": f"redis://127.0.0.1:{p['redis']}/0",
                    "REPLAY_PULL_BIND": tcp("replay_pull"), "REPLAY_BIND": tcp("replay_zmq")}),
        "expert": (service("services.expert.main"),
                   {**loopback, "METRICS_PORT": str(p["expert"]), "EXPERT_BIND": tcp("expert_zmq")}),
        "learner": (service("services.learner.main"),
                    {**loopback, "METRICS_PORT": str(p["learner"]), "CHECKPOINT_DIR": f"{run}/checkpoints",
                     "REPLAY_ADDR": tcp("replay_zmq"), "LEARNER_EPISODES_BIND": tcp("episodes"),
                     "WEIGHTS_BIND": tcp("weights"), "CONTROL_BIND": tcp("control")}),
        # the stability doctor (services/doctor): advise unless DOCTOR_MODE says otherwise
        "doctor": (service("services.doctor.main"),
                   {**loopback, "METRICS_PORT": str(p["doctor"]),
                    "PROMETHEUS_URL": f"http://127.0.0.1:{p['prometheus']}", "CONTROL_ADDR": tcp("control"),
                    "CHECKPOINT_DIR": f"{run}/checkpoints", "DOCTOR_DIR": f"{run}/doctor",
                    "DOCTOR_MODE": os.environ.get("DOCTOR_MODE", "advise")}),
    }
    for i in range(emulators):
        port = p["emulator"] + i
        out[f"emulator-{port}"] = (service("services.emulator.main"), {
            **loopback, "METRICS_PORT": str(port), "WORKER_ID": f"emulator-{port}",
            "EMULATOR_WORKDIR": f"{run}/mame/{port}", "REPLAY_ADDR": tcp("replay_pull"),
            "LEARNER_EPISODES_ADDR": tcp("episodes"), "EXPERT_ADDR": tcp("expert_zmq"),
            "WEIGHTS_ADDR": tcp("weights")})
    return out


def _quote(value: str) -> str:
    """A value in supervisord's config: its own %-expansion and its argv/env parsing need escapes."""
    value = value.replace("%", "%%")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def supervisor_config(run: Path, procs: dict[str, tuple[list[str], dict[str, str]]]) -> str:
    lines = ["[supervisord]", "nodaemon=true", "logfile=/dev/stdout", "logfile_maxbytes=0", "loglevel=info",
             f"pidfile={run}/supervisord.pid", f"childlogdir={run}/logs", "",
             "[unix_http_server]", f"file={run}/supervisor.sock", "chmod=0700", "",
             "[rpcinterface:supervisor]", "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
             "", "[supervisorctl]", f"serverurl=unix://{run}/supervisor.sock", ""]
    for name, (argv, env) in procs.items():
        kind = name.split("-")[0]
        lines += [f"[program:{name}]", "command=" + " ".join(_quote(a) for a in argv), f"directory={REPO}",
                  f"priority={PRIORITY[kind]}", "autostart=true", "autorestart=true",
                  f"startsecs={START_SECS}", f"startretries={START_RETRIES}",
                  # SIGINT: the services' own Ctrl-C path (checkpoint, flush, MAME exit); to the
                  # whole process group, so a worker's MAME gets it and is killed with it if need be
                  "stopsignal=INT", f"stopwaitsecs={STOP_WAIT_S[kind]}", "stopasgroup=true", "killasgroup=true",
                  "redirect_stderr=true", f"stdout_logfile={run}/logs/{name}.log",
                  "stdout_logfile_maxbytes=50MB", "stdout_logfile_backups=3"]
        if env:
            lines.append("environment=" + ",".join(f"{k}={_quote(v)}" for k, v in env.items()))
        lines.append("")
    return "\n".join(lines)


def prometheus_config(run: Path, p: dict[str, int]) -> str:
    text = (REPO / "prometheus" / "prometheus.local.yml").read_text()
    for name in ("learner", "replay", "expert", "doctor", "prometheus"):
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
    for sub in ("redis", "prometheus", "checkpoints", "mame", "logs"):
        (run / sub).mkdir(parents=True, exist_ok=True)
    targets = [f"127.0.0.1:{p['emulator'] + i}" for i in range(args.emulators)]
    (run / "emulators.json").write_text(json.dumps([{"targets": targets, "labels": {}}], indent=2) + "\n")
    (run / "prometheus.yml").write_text(prometheus_config(run, p))
    conf = run / "supervisord.conf"
    conf.write_text(supervisor_config(run, programs(run, p, args.emulators)))
    prom = f"http://127.0.0.1:{p['prometheus']}"
    print(f"""Tempest local stack: {args.emulators} emulator worker(s), TEMPEST_ROMPATH={os.environ.get('TEMPEST_ROMPATH', '(unset)')}
  Prometheus      {prom}   alerts: {prom}/alerts
  learner metrics http://127.0.0.1:{p['learner']}/metrics   live settings: python -m services.learner.ctl --addr tcp://127.0.0.1:{p['control']} --token-file {run}/checkpoints/control-token get
  replay metrics  http://127.0.0.1:{p['replay']}/metrics   expert: http://127.0.0.1:{p['expert']}/metrics
  doctor          http://127.0.0.1:{p['doctor']}/diagnosis.md   (mode {os.environ.get('DOCTOR_MODE', 'advise')}; also {run}/doctor/diagnosis.md)
  workers         {', '.join(f'http://{t}/metrics' for t in targets) or '(none)'}
  Redis           127.0.0.1:{p['redis']} (append-only files in {run}/redis)
  logs            {run}/logs/<service>.log
  processes       .venv/bin/supervisorctl -c {conf} status   (a crashed service restarts by itself)
  key figures     make status   (PROMETHEUS_URL={prom} DOCTOR_URL=http://127.0.0.1:{p['doctor']})
Ctrl-C stops everything.""", flush=True)
    if args.dry_run:
        return 0
    os.chdir(REPO)
    supervisord = str(REPO / ".venv" / "bin" / "supervisord")
    os.execv(supervisord, [supervisord, "-c", str(conf)])


if __name__ == "__main__":
    sys.exit(main())
