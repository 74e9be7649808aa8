"""Switching a running lab gateway between the userspace IO modes, end to end.

    site1 ─ appliance1 ═ VXLAN ═ gateway: vx-tenant1 ─ worker ─ sl-tenant1 ─ service
The gateway reloads its config, turns the tenant's offloads on (packet-vnet) or off
(packet) at both ends of its links, restarts the worker, and the tenant page and a TCP
stream keep working; in packet-vnet the stream crosses as GSO super-frames.
"""

from __future__ import annotations

import pytest
from labkit import fresh_status, lab, python_in, run_in, spawn_python, wait_port

from cjb.common.netlink import netns
from cjb.common.netlink.offload import features
from cjb.gateway.dataplane.io_mode import set_fast_path, set_userspace_io

pytestmark = [pytest.mark.root, pytest.mark.slow]

SINK = """
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.bind(("::", 9000)); s.listen(1)
c, _ = s.accept()
n = 0
while (b := c.recv(1 << 20)):
    n += len(b)
c.sendall(str(n).encode()); c.close()
"""


def push(site: str, nbytes: int) -> str:
    code = (
        "import socket; c=socket.create_connection(('192.168.0.100', 9000), timeout=30);"
        f"c.sendall(bytes({nbytes})); c.shutdown(socket.SHUT_WR); print(c.recv(100).decode())"
    )
    out = python_in(site, code, timeout=60)
    assert out.returncode == 0, out.stderr
    return str(out.stdout).strip()


def test_mode_switch_keeps_the_tenant_working() -> None:
    with lab(1) as state:
        site, service, gw = (state.namespaces[n] for n in ("site1", "service", "gateway"))
        config = state.run_dir / "gateway.json"
        # About the Python worker's IO: without the kernel fast path (the default), which
        # would otherwise carry this TCP flow past the worker.
        set_fast_path(config, "userspace")
        for mode in ("packet-vnet", "packet"):
            set_userspace_io(config, mode)
            with netns(gw):
                on = features("vx-tenant1")
            assert on["gro"] == (mode == "packet-vnet") and on["tso"] == (mode == "packet-vnet")
            page = run_in(site, ["curl", "-s", "-m", "10", "http://192.168.0.100/"])
            assert "Hello, tenant tenant1" in page.stdout
            sink = spawn_python(service, SINK)
            try:
                wait_port(service, 9000)
                assert push(site, 20 << 20) == str(20 << 20)
            finally:
                sink.kill()
                sink.wait()
            tenant = fresh_status(state)["tenants"]["tenant1"]
            assert tenant["userspace_io"] == mode
            errors = {k: v for k, v in tenant["router"]["drops"].items() if "error" in k}
            assert not errors, errors
            if mode == "packet-vnet":
                gso = tenant["gso"]
                assert gso["superframes"]["to-service"] > 0
                assert gso["segments"]["to-service"] > gso["superframes"]["to-service"]
                assert not gso["drops"]
            else:
                assert "gso" not in tenant


def test_three_tenants_same_address_stay_apart_in_packet_vnet() -> None:
    """The paper's experiment (Fig. 7) with super-frames: three sites, all 192.168.0.10."""
    with lab(3) as state:
        set_userspace_io(state.run_dir / "gateway.json", "packet-vnet")
        for k in (1, 2, 3):
            page = run_in(
                state.namespaces[f"site{k}"], ["curl", "-s", "-m", "10", "http://192.168.0.100/"]
            )
            assert f"Hello, tenant tenant{k}<" in page.stdout, page.stdout
