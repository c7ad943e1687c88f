"""The Swarm stack file, generated from docker-compose.yml (issue 18): one source of truth.

    docker compose -f docker-compose.yml [-f more.yml ...] config --format json | \\
        .venv/bin/python -m tools.stack_file > stack.yml
    docker stack deploy -c stack.yml tempest

`docker compose config` does what both tools agree on: variables interpolated, files merged,
profiles applied, relative bind mounts made absolute.  What `docker stack deploy` cannot read is
then taken out or rewritten (stack_from_config), each for a reason given below.  One choice is
added: every service resolves by DNS round-robin (endpoint_mode: dnsrr) and publishes on its own
node (ports mode: host), as under compose, instead of Swarm's IPVS virtual IPs and routing mesh.  Swarm still needs the images on every node (a registry;
single-node: the images `docker compose build` made) and `node.labels.gpu == true` on the
learner's node.
"""
from __future__ import annotations

import copy
import json
import sys

import yaml

STACK_VERSION = "3.8"   # the newest Compose file format docker stack deploy's schema knows by number
# Service keys the 3.x schema of `docker stack deploy` has no place for, or that Swarm ignores
# with a warning: build (images come from a registry or the local engine), depends_on (its
# conditions are compose-only; Swarm starts everything at once and our services wait for their
# peers themselves), restart (Swarm's is deploy.restart_policy), pull_policy and platform
# (compose-only), profiles (already applied by `compose config`), expose (deprecated by the stack
# CLI: services on the stack's network reach every port).
DROPPED_SERVICE_KEYS = ("build", "depends_on", "restart", "pull_policy", "platform", "profiles", "expose")
# Top-level keys of `compose config` the 3.x schema rejects.
DROPPED_TOP_KEYS = ("name",)


def _port(p: dict) -> dict:
    """A long-syntax port of `compose config` as Swarm takes it: published on the node that runs
    the task (mode: host: no routing mesh, see stack_from_config), as an int; no host_ip (Swarm
    binds every interface of that node)."""
    out = {"target": int(p["target"]), "protocol": p.get("protocol", "tcp"), "mode": "host"}
    if p.get("published") not in (None, ""):
        out["published"] = int(p["published"])
    return out


def _healthcheck(h: dict) -> dict:
    return {k: v for k, v in h.items() if k != "start_interval"}   # compose-only (Compose 2.20+)


def _deploy(d: dict) -> dict:
    d = dict(d)
    res = d.get("resources", {}).get("reservations", {})
    if "devices" in res:     # compose's GPU reservation: Swarm has generic_resources instead
        res = {k: v for k, v in res.items() if k != "devices"}
        d["resources"] = {**d["resources"], "reservations": res} if res else \
            {k: v for k, v in d["resources"].items() if k != "reservations"}
        if not d["resources"]:
            del d["resources"]
    return d


def _volume(v):
    """Long-syntax volumes stay long; `bind: {create_host_path: ...}` is compose-only."""
    if isinstance(v, dict) and isinstance(v.get("bind"), dict):
        v = {**v, "bind": {k: x for k, x in v["bind"].items() if k != "create_host_path"}}
        if not v["bind"]:
            del v["bind"]
    return v


def stack_from_config(config: dict) -> dict:
    """`docker compose config --format json` (a dict) -> a stack file `docker stack deploy` reads."""
    if "services" not in config:
        raise ValueError("not the output of `docker compose config`: no services")
    config = copy.deepcopy(config)
    stack = {k: v for k, v in config.items() if k not in DROPPED_TOP_KEYS}
    stack["version"] = STACK_VERSION
    services = {}
    for name, svc in config["services"].items():
        if "image" not in svc:
            raise ValueError(f"service {name} has no image: Swarm cannot build it")
        s = {k: v for k, v in svc.items() if k not in DROPPED_SERVICE_KEYS and v is not None}
        if "ports" in s:
            s["ports"] = [_port(p) for p in s["ports"]]
        if "healthcheck" in s:
            s["healthcheck"] = _healthcheck(s["healthcheck"])
        # Names resolve as under compose: by DNS to the containers (dnsrr), not to a virtual IP
        # behind Swarm's IPVS load balancer, which some hosts cannot set up (no IPVS, or
        # iptables mangle rules refused: services then run but cannot reach each other by name).
        # Our services run one replica each, apart from the emulators, which nobody connects to.
        s["deploy"] = {**_deploy(s.get("deploy", {})), "endpoint_mode": "dnsrr"}
        if "volumes" in s:
            s["volumes"] = [_volume(v) for v in s["volumes"]]
        if "networks" in s and isinstance(s["networks"], dict):   # `default: null` -> a list Swarm reads
            s["networks"] = sorted(s["networks"])
        services[name] = s
    stack["services"] = services
    for net in stack.get("networks", {}).values():
        if isinstance(net, dict):
            net.pop("name", None)       # let Swarm prefix it with the stack's name, as for volumes
            net.setdefault("driver", "overlay")
    for vol in stack.get("volumes", {}).values():
        if isinstance(vol, dict):
            vol.pop("name", None)
    return stack


def main(argv=None) -> int:
    text = sys.stdin.read()
    try:
        config = json.loads(text)
        stack = stack_from_config(config)
    except (json.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
        print(f"stack_file: stdin is not `docker compose config --format json` output ({exc})", file=sys.stderr)
        return 2
    sys.stdout.write("# generated by tools/stack_file.py from `docker compose config`: do not edit\n")
    yaml.safe_dump(stack, sys.stdout, sort_keys=False, default_flow_style=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
