"""docker-compose.yml and docker/*.Dockerfile, checked by structure (no Docker engine here):
the Compose specification schema, environment names against the config classes, entry points,
ports, healthchecks, depends_on, the ROM mount, Grafana/Prometheus mounts and scrape targets."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from services.doctor.config import DoctorConfig
from services.emulator.config import EmulatorConfig
from services.expert.config import ExpertConfig
from services.learner.settings import LearnerConfig, LiveSettings
from services.replay.config import ReplayConfig
from tempest_common.config import describe

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
GPU_OVERRIDE = REPO / "docker" / "compose.gpu.yml"
SCHEMA_FILE = Path(REPO).parent / "shared" / "schemas" / "compose-spec.json"

# Our services: their config classes (the only environment names they read).
CONFIGS = {
    "emulator": (EmulatorConfig,),
    "expert": (ExpertConfig,),
    "replay": (ReplayConfig,),
    "learner": (LearnerConfig, LiveSettings),
    "doctor": (DoctorConfig,),
}
PUBLISHING = {"grafana", "prometheus"}  # the only services with host ports


def _load(path: Path) -> dict:
    """Plain YAML: no Compose-only tags (!reset, !override need Compose >= 2.24), so every Compose v2
    and `docker stack deploy` read the files."""
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return _load(COMPOSE_FILE)


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, env: dict | None = None) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?message} with `env` (default: nothing set)."""
    env = env or {}

    def sub(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            raise KeyError(f"{name} is required: {arg}")
        return ""
    return _VAR.sub(sub, value)


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def default_metrics_port(name: str) -> int:
    ports = [d for cls in CONFIGS[name] for env, _t, d, _a, _h in describe(cls) if env == "METRICS_PORT"]
    assert len(ports) == 1, f"{name}: expected exactly one METRICS_PORT setting"
    return ports[0]


def entry_module(command) -> str:
    args = command.split() if isinstance(command, str) else list(command)
    assert "-m" in args, f"command {command!r} does not run a module (python -m ...)"
    return args[args.index("-m") + 1]


# -- the Compose specification ---------------------------------------------------------------

@pytest.mark.parametrize("path", [COMPOSE_FILE, GPU_OVERRIDE], ids=lambda p: p.name)
def test_compose_file_validates_against_the_compose_spec(path):
    if not SCHEMA_FILE.is_file():
        pytest.skip(f"Compose specification schema not found at {SCHEMA_FILE}")
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_FILE.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(_load(path)), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_all_services_present(services):
    assert set(services) == set(CONFIGS) | {"redis", "prometheus", "grafana"}


# -- environment names ------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_environment_variable_is_a_setting_of_the_service(services, name):
    known = {env for cls in CONFIGS[name] for env, *_ in describe(cls)}
    unknown = set(env_of(services[name])) - known
    assert not unknown, f"{name}: {sorted(unknown)} are not settings of {[c.__name__ for c in CONFIGS[name]]}"


def test_service_addresses_inside_compose(services):
    emu = env_of(services["emulator"])
    assert emu["REPLAY_ADDR"] == "tcp://replay:5555"
    assert emu["LEARNER_EPISODES_ADDR"] == "tcp://learner:5557"
    assert emu["EXPERT_ADDR"] == "tcp://expert:5556"
    assert emu["WEIGHTS_ADDR"] == "tcp://learner:5558"
    assert env_of(services["learner"])["REPLAY_ADDR"] == "tcp://replay:5560"
    assert env_of(services["replay"])["REDIS_URL"] == "redis://redis:6379/0"


def test_environment_values_pass_the_config_validation(services):
    """With nothing set in the shell, each service's compose environment loads cleanly."""
    from tempest_common.config import load_config
    for name, classes in CONFIGS.items():
        env = {k: interpolate(v) for k, v in env_of(services[name]).items()}
        for cls in classes:
            load_config(cls, env)


def test_binds_match_the_addresses_peers_use(services):
    """Each address a peer connects to is bound (by default or explicitly) by its target."""
    binds = {
        "replay": {"REPLAY_PULL_BIND", "REPLAY_BIND"},
        "learner": {"LEARNER_EPISODES_BIND", "WEIGHTS_BIND"},
        "expert": {"EXPERT_BIND"},
    }
    bound: set[str] = set()
    for name, envs in binds.items():
        defaults = {e: d for cls in CONFIGS[name] for e, _t, d, _a, _h in describe(cls)}
        given = env_of(services[name])
        for e in envs:
            port = (given.get(e) or defaults[e]).rsplit(":", 1)[1]
            bound.add(f"{name}:{port}")
    wanted = {v.removeprefix("tcp://") for v in env_of(services["emulator"]).values() if v.startswith("tcp://")}
    wanted.add(env_of(services["learner"])["REPLAY_ADDR"].removeprefix("tcp://"))
    assert wanted <= bound, f"connected to but not bound: {sorted(wanted - bound)}"


# -- images, entry points, Dockerfiles --------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_image_command_and_dockerfile(services, name):
    svc = services[name]
    module = entry_module(svc["command"])
    assert module == f"services.{name}.main"
    assert (REPO / Path(*module.split("."))).with_suffix(".py").is_file(), f"{module} does not exist"
    build = svc["build"]
    context = REPO / build.get("context", ".")
    dockerfile = context / build["dockerfile"]
    assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
    text = dockerfile.read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M), f"{dockerfile.name}: base is not python:3.11-slim"
    cmd = re.findall(r"^CMD\s+(\[.*\])\s*$", text, re.M)
    assert cmd and entry_module(json.loads(cmd[-1])) == module, f"{dockerfile.name}: CMD does not run {module}"
    # every path the Dockerfile copies from the context exists and is not ignored
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for src in re.findall(r"^COPY\s+(?!--from)(\S+)\s+\S+\s*$", text, re.M):
        assert (context / src).exists(), f"{dockerfile.name}: COPY {src}: no such path"
        assert src.rstrip("/") not in ignored, f"{dockerfile.name}: COPY {src} is excluded by .dockerignore"
    assert interpolate(svc["image"]).startswith("local/tempest-"), "images are ${REGISTRY:-local}/tempest-*"


def test_emulator_installs_debian_mame():
    text = (REPO / "docker" / "emulator.Dockerfile").read_text()
    assert re.search(r"apt-get install[^\n]*\bmame\b", text)


@pytest.mark.parametrize("name", ["learner", "emulator"])
def test_torch_comes_from_build_arguments_the_compose_file_passes(services, name):
    """Both images that install torch take its index from the build (issue 18: the emulator's had
    no args:, so a build with another index changed the learner only)."""
    text = (REPO / "docker" / f"{name}.Dockerfile").read_text()
    assert re.search(r"^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cpu$", text, re.M)
    pinned = next(l for l in (REPO / "requirements.txt").read_text().splitlines() if l.startswith("torch=="))
    assert re.search(rf"^ARG TORCH_SPEC={re.escape(pinned)}$", text, re.M), "TORCH_SPEC default is not the pinned torch"
    args = services[name]["build"]["args"]
    assert interpolate(args["TORCH_INDEX_URL"]) == "https://download.pytorch.org/whl/cpu"
    assert interpolate(args["TORCH_SPEC"]) == pinned
    assert interpolate(args["TORCH_INDEX_URL"], {"TORCH_INDEX_URL": "https://x/cu128"}) == "https://x/cu128"


def test_the_gpu_file_reserves_one_for_the_learner_which_keeps_checkpoints_on_a_volume(compose, services):
    learner = services["learner"]
    assert "resources" not in learner.get("deploy", {}), "the base file must run on a host without a GPU"
    gpu = _load(GPU_OVERRIDE)["services"]
    assert set(gpu) == {"learner"}
    devices = gpu["learner"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d["capabilities"] and d["count"] == 1 for d in devices)
    assert "node.labels.gpu == true" in learner["deploy"]["placement"]["constraints"]
    ckpt = env_of(learner)["CHECKPOINT_DIR"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in learner["volumes"]}
    assert ckpt in mounts and mounts[ckpt] in compose["volumes"], "checkpoints are not on a named volume"


# -- ports, names, password ------------------------------------------------------------------

def test_only_grafana_and_prometheus_publish_ports(services):
    publishing = {name for name, svc in services.items() if svc.get("ports")}
    assert publishing <= PUBLISHING and "grafana" in publishing
    grafana = [interpolate(str(p)) for p in services["grafana"]["ports"]]
    assert grafana == ["127.0.0.1:3000:3000"], "Grafana: loopback by default"
    assert [interpolate(str(p), {"GRAFANA_BIND": "0.0.0.0", "GRAFANA_PORT": "3300"})
            for p in services["grafana"]["ports"]] == ["0.0.0.0:3300:3000"]
    prometheus = services["prometheus"]["ports"]
    assert [interpolate(str(p)) for p in prometheus] == ["127.0.0.1:9090:9090"], "Prometheus: loopback by default"
    assert [interpolate(str(p), {"PROMETHEUS_PORT": "19090"}) for p in prometheus] == ["127.0.0.1:19090:9090"], \
        "Prometheus' host port must move (make up's Prometheus holds 9090)"


def test_emulator_scales(services):
    emu = services["emulator"]
    assert "container_name" not in emu and "ports" not in emu and "hostname" not in emu
    assert not [n for n, s in services.items() if "container_name" in s and n in CONFIGS], \
        "fixed container names block scaling and swarm"


def test_emulator_mounts_the_rom_read_only(services):
    emu = services["emulator"]
    target = env_of(emu)["TEMPEST_ROMPATH"]
    roms = [v for v in emu["volumes"] if "TEMPEST_ROMPATH" in v.split(":")[0]]
    assert len(roms) == 1, "the ROM folder is mounted from ${TEMPEST_ROMPATH}"
    _src, dst, mode = interpolate(roms[0]).rsplit(":", 2)
    assert dst == target and mode == "ro"


def test_grafana_admin_password_has_no_default(services):
    env = env_of(services["grafana"])
    value = env["GF_SECURITY_ADMIN_PASSWORD"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", value), value
    with pytest.raises(KeyError):
        interpolate(value)
    assert interpolate(value, {"GRAFANA_ADMIN_PASSWORD": "s3cret"}) == "s3cret"
    assert interpolate(env["TEMPEST_ALERT_WEBHOOK_URL"]).startswith("http"), "webhook URL needs a harmless default"


def test_redis_is_persistent_and_bounded(compose, services):
    redis = services["redis"]
    cmd = [interpolate(str(a)) for a in redis["command"]]
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    assert re.fullmatch(r"\d+[kmg]b", cmd[cmd.index("--maxmemory") + 1])
    data = [v for v in redis["volumes"] if v.endswith(":/data")]
    assert data and data[0].split(":")[0] in compose["volumes"]


# -- healthchecks, restarts, start order ------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_healthcheck_probes_the_metrics_port(services, name):
    svc = services[name]
    port = default_metrics_port(name)
    assert int(env_of(svc).get("METRICS_PORT", port)) == port
    test = " ".join(svc["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/metrics" in test and "urllib" in test
    assert svc["restart"] in ("unless-stopped", "on-failure") or svc["restart"].startswith("on-failure:")


def test_every_service_has_a_healthcheck_and_a_restart_policy(services):
    for name, svc in services.items():
        assert svc.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
        assert svc.get("restart") in ("unless-stopped", "on-failure", "always"), f"{name}: restart policy"
    assert "redis-cli ping" in " ".join(services["redis"]["healthcheck"]["test"])


def test_depends_on_waits_for_healthy_services(services):
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions (long form)"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert spec.get("condition") == "service_healthy", f"{name} -> {dep}"
            assert services[dep].get("healthcheck"), f"{dep} has no healthcheck for {name} to wait on"
    assert set(services["emulator"]["depends_on"]) == {"replay", "learner", "expert"}
    assert "redis" in services["replay"]["depends_on"]


def _seconds(s: str) -> float:
    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", s):
        total += float(num) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def test_stop_grace_periods(services):
    assert _seconds(services["emulator"]["stop_grace_period"]) >= 20, "worker needs time to stop MAME"
    assert _seconds(services["learner"]["stop_grace_period"]) >= 20, "learner checkpoints on SIGTERM"
    assert services["emulator"].get("init") is True


# -- Prometheus and Grafana -------------------------------------------------------------------

def test_prometheus_targets_match_compose_services_and_metrics_ports(services):
    prom = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    found: dict[str, set[int]] = {}
    for job in prom["scrape_configs"]:
        for sc in job.get("static_configs", []):
            for target in sc["targets"]:
                host, port = target.rsplit(":", 1)
                found.setdefault(host, set()).add(int(port))
        for sd in job.get("dns_sd_configs", []):
            for host in sd["names"]:
                found.setdefault(host, set()).add(int(sd["port"]))
    for name in CONFIGS:
        assert found.get(name) == {default_metrics_port(name)}, f"{name}: scraped at {found.get(name)}"
    assert set(found) - {"localhost"} <= set(services), f"targets without a service: {set(found) - set(services)}"


def test_prometheus_mounts_its_config_folder(services):
    mounts = [v for v in services["prometheus"]["volumes"] if v.startswith("./")]
    assert any(v.split(":")[1] == "/etc/prometheus" for v in mounts)
    for v in mounts:
        assert (REPO / v.split(":")[0]).exists(), v
    cmd = " ".join(services["prometheus"]["command"])
    assert "--config.file=/etc/prometheus/prometheus.yml" in cmd


def test_grafana_provisioning_mounts_exist(services):
    mounts = [v for v in services["grafana"]["volumes"] if v.startswith("./")]
    assert mounts, "grafana mounts no provisioning"
    targets = set()
    for v in mounts:
        src, dst = v.split(":")[:2]
        assert (REPO / src).exists(), f"{src} does not exist in the repo"
        targets.add(dst)
    for sub in ("datasources", "dashboards", "alerting"):
        assert (f"/etc/grafana/provisioning/{sub}" in targets or "/etc/grafana/provisioning" in targets), sub
    # the dashboards provider reads the folder where the dashboards are mounted
    provider = yaml.safe_load((REPO / "grafana/provisioning/dashboards/dashboards.yml").read_text())
    assert provider["providers"][0]["options"]["path"] in targets | {"/etc/grafana/provisioning/dashboards"}
    # the datasource points at the compose Prometheus
    ds = yaml.safe_load((REPO / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
