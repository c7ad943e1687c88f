"""/metrics binds METRICS_ADDR: loopback under `make up` (tools/local_stack.py), all interfaces
by default (compose: Prometheus scrapes over the container network)."""
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tempest_common.config import ConfigError
from tempest_common.service_main import metrics_addr
from tests.conftest import free_port
from tools.local_stack import ports_with, programs

REPO = Path(__file__).resolve().parents[2]


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the IPv4 sockets listening on `port`, from /proc/net/tcp."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        hex_ip, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:   # 0A = LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(hex_ip)[::-1]))
    return found


@pytest.mark.parametrize("addr", ["127.0.0.1", "0.0.0.0"])
def test_serve_metrics_binds_metrics_addr(addr):
    port = free_port()
    code = textwrap.dedent(f"""
        import time
        from tempest_common.service_main import serve_metrics
        serve_metrics({port})
        time.sleep(30)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={"METRICS_ADDR": addr, "PATH": "/usr/bin"})
    try:
        deadline = time.monotonic() + 10
        while not listening_addresses(port):
            assert proc.poll() is None and time.monotonic() < deadline, "the metrics server did not start"
            time.sleep(0.05)
        assert listening_addresses(port) == {addr}
    finally:
        proc.kill()
        proc.wait()


def test_metrics_addr_refuses_a_name_in_one_line():
    assert metrics_addr({}) == "0.0.0.0"
    assert metrics_addr({"METRICS_ADDR": "127.0.0.1"}) == "127.0.0.1"
    with pytest.raises(ConfigError, match="METRICS_ADDR='localhost' is not an IP address"):
        metrics_addr({"METRICS_ADDR": "localhost"})


def test_make_up_binds_every_metrics_endpoint_to_loopback(tmp_path):
    procs = programs(tmp_path, ports_with(0), emulators=2)
    python_services = {name: env for name, (argv, env) in procs.items() if any("services." in a for a in argv)}
    assert set(python_services) == {"emulator-9110", "emulator-9111", "replay", "expert", "learner", "doctor"}
    assert all(env["METRICS_ADDR"] == "127.0.0.1" for env in python_services.values())
