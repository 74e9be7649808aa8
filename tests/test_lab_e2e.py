"""End to end through the real lab: Fig. 7, ping/PMTU semantics, TCP and UDP through the
translator, VNI spoofing, the agent's repair loop, and nothing left after `down`.

            siteK (192.168.0.10/24 eth0, K = 1..3)
              │ veth
            applianceK  br-lan + cjb-vx0 (VXLAN VNI K)
              │ wan0 fd63:6a62:K::2
            internet  (routes the ULA underlay)
              │ wan0 fd63:6a62::2
            gateway   nft VNI binding; worker: vx-tenantK <-> translator <-> sl-tenantK
              │ veth                                  (IPv6 as is) <-> nl-tenantK
            service   tenantK fe80::c0a8:64 | n-tenantK fe80::c0a8:64 + own link-local;
                      `cjb service serve` on [::]:80

One lab is shared by the module (fixture); the same-MAC and teardown checks build their own.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labkit import (
    Capture,
    fresh_status,
    lab,
    namespaces_of,
    python_in,
    run_in,
    spawn_python,
    wait_port,
)

from cjb.common.netlink import netns
from cjb.common.netlink.real import RealKernel
from cjb.lab import procs
from cjb.lab.control import down, native_link_local, up
from cjb.lab.demo import crossed, run_demo
from cjb.lab.state import LabState
from cjb.lab.topology import tenant_name

pytestmark = [pytest.mark.root, pytest.mark.slow]

MB50 = 50 * 1024 * 1024


@pytest.fixture(scope="module")
def lab3() -> Iterator[LabState]:
    with lab(3) as state:
        yield state


def _fig7(state: LabState) -> None:
    """The paper's two commands, with real curl in every site's namespace: each answer
    greets the site's own tenant and comes from that tenant's link of the path it took."""
    rows = run_demo(state)
    assert not crossed(rows), crossed(rows)
    for k, row in enumerate(rows, 1):
        tenant = tenant_name(k)
        assert row.tenant == tenant
        for fetch, ifname, path in (
            (row.translated, tenant, "translated"),
            (row.native, f"n-{tenant}", "native"),
        ):
            assert fetch.tenant == tenant, fetch
            assert fetch.header_tenant == tenant, fetch
            assert (fetch.ifname, fetch.path) == (ifname, path), fetch
        assert row.ok


def test_fig7_identical_ips(lab3: LabState) -> None:
    _fig7(lab3)


def test_fig7_native_commands_as_the_readme_writes_them(lab3: LabState, tmp_path: Path) -> None:
    """`cjb lab exec siteK -- curl -g 'http://[fe80::192.168.0.100%eth0]/'` as the README
    writes it, and the native path to the service host's other link-local address (the
    kernel-generated one), which the native link keeps besides fe80::c0a8:64."""
    # `cjb lab exec` takes the newest run under CJB_LAB_ROOT: a root holding only this one,
    # so that other labs on the machine cannot be picked instead.
    root = tmp_path / "lab-root"
    root.mkdir()
    (root / lab3.run_id).symlink_to(lab3.run_dir)
    env = {**os.environ, "CJB_LAB_ROOT": str(root)}
    readme_url = "http://[fe80::192.168.0.100%eth0]/"
    for k in range(1, lab3.tenants + 1):
        site = lab3.namespaces[f"site{k}"]
        cli = [sys.executable, "-m", "cjb.cli", "lab", "exec", f"site{k}", "--"]
        out = subprocess.run(
            [*cli, "curl", "-g", readme_url], capture_output=True, text=True, env=env, timeout=30
        )
        assert out.returncode == 0, out.stderr
        assert f"<h1>Hello, tenant tenant{k}</h1>" in out.stdout, out.stdout
        own = native_link_local(lab3, k)
        assert own is not None and own != ipaddress.IPv6Address("fe80::c0a8:64")
        for url in (readme_url, f"http://[{own}%eth0]/"):
            head = run_in(site, ["curl", "-g", "-sS", "-m", "5", "-I", url], timeout=20)
            assert head.returncode == 0, (url, head.stderr)
            assert f"x-cjb-tenant: tenant{k}\n" in head.stdout, head.stdout
            assert f"x-cjb-interface: n-tenant{k}\n" in head.stdout, head.stdout
            assert "x-cjb-path: native\n" in head.stdout, head.stdout


def test_fig7_identical_ips_and_macs() -> None:
    with lab(3, same_mac=True) as state:
        with RealKernel() as kernel:
            macs = {kernel.links(state.namespaces[f"site{k}"])["eth0"].mac for k in (1, 2, 3)}
        assert len(macs) == 1
        _fig7(state)


def test_ping_and_dont_fragment_semantics(lab3: LabState) -> None:
    site = lab3.namespaces["site1"]
    ok = run_in(site, ["ping", "-c", "3", "-i", "0.2", "-W", "2", "192.168.0.100"])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # 1472 + 8 (ICMP) + 20 (IPv4) = 1500: fits the LAN MTU, and the service link's 1520 fits
    # the 20-byte longer IPv6 packet, so DF traffic at full size gets through untouched.
    full = run_in(
        site, ["ping", "-c", "3", "-i", "0.2", "-W", "2", "-M", "do", "-s", "1472", "192.168.0.100"]
    )
    assert full.returncode == 0, full.stdout + full.stderr
    assert " 0% packet loss" in full.stdout
    # One byte more cannot leave the client with DF set: the local stack refuses it.
    over = run_in(site, ["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1473", "192.168.0.100"])
    assert over.returncode != 0
    assert "message too long" in (over.stdout + over.stderr).lower()


TCP_SERVER = r"""
import hashlib, socket, sys
mode, size = sys.argv[1], int(sys.argv[2])
srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("::", 5001)); srv.listen(1)
conn, peer = srv.accept()
host, _ = socket.getnameinfo(peer, socket.NI_NUMERICHOST)
h = hashlib.sha256()
if mode == "recv":
    n = 0
    while chunk := conn.recv(1 << 16):
        h.update(chunk); n += len(chunk)
    print(host, n, h.hexdigest())
else:
    block = bytes(range(256)) * 256
    sent = 0
    while sent < size:
        part = block[: min(len(block), size - sent)]
        conn.sendall(part); h.update(part); sent += len(part)
    conn.shutdown(socket.SHUT_WR)
    print(host, sent, h.hexdigest())
conn.close()
"""

TCP_CLIENT = r"""
import hashlib, os, socket, sys
mode, size = sys.argv[1], int(sys.argv[2])
s = socket.create_connection(("192.168.0.100", 5001), timeout=60)
h = hashlib.sha256()
if mode == "send":
    data = os.urandom(1 << 20)
    sent = 0
    while sent < size:
        part = data[: min(len(data), size - sent)]
        s.sendall(part); h.update(part); sent += len(part)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    print(sent, h.hexdigest())
else:
    n = 0
    while chunk := s.recv(1 << 16):
        h.update(chunk); n += len(chunk)
    print(n, h.hexdigest())
"""


@pytest.mark.parametrize("direction", ["lan-to-service", "service-to-lan"])
def test_tcp_50mb_through_the_translator(lab3: LabState, direction: str) -> None:
    server_mode, client_mode = (
        ("recv", "send") if direction == "lan-to-service" else ("send", "recv")
    )
    service = lab3.namespaces["service"]
    server = spawn_python(service, TCP_SERVER, server_mode, str(MB50))
    try:
        wait_port(service, 5001)
        client = python_in(
            lab3.namespaces["site2"], TCP_CLIENT, client_mode, str(MB50), timeout=240
        )
        out, err = server.communicate(timeout=30)
    finally:
        server.kill()
    assert client.returncode == 0, client.stderr
    assert server.returncode == 0, err
    peer, server_n, server_hash = out.split()
    client_n, client_hash = client.stdout.split()
    # The service sees the LAN client as fe80::c0a8:a on tenant2's link (scope id).
    assert peer == "fe80::c0a8:a%tenant2"
    assert int(server_n) == int(client_n) == MB50
    assert server_hash == client_hash


UDP_ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", 5002))
peers = set()
for _ in range(int(sys.argv[1])):
    data, peer = s.recvfrom(65535)
    peers.add(socket.getnameinfo(peer, socket.NI_NUMERICHOST)[0])
    s.sendto(data[::-1], peer)
print(" ".join(sorted(peers)))
"""

UDP_CLIENT = r"""
import os, socket, sys
sizes = [int(x) for x in sys.argv[1].split(",")]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
ok = 0
for size in sizes:
    data = os.urandom(size)
    s.sendto(data, ("192.168.0.100", 5002))
    reply, _ = s.recvfrom(65535)
    ok += reply == data[::-1]
print(ok)
"""


def test_udp_both_ways_including_full_size(lab3: LabState) -> None:
    sizes = [1, 8, 100, 512, 1000, 1400, 1472] * 5
    service = lab3.namespaces["service"]
    server = spawn_python(service, UDP_ECHO, str(len(sizes)))
    try:
        wait_port(service, 5002, socket.SOCK_DGRAM)
        client = python_in(lab3.namespaces["site3"], UDP_CLIENT, ",".join(map(str, sizes)))
        out, err = server.communicate(timeout=30)
    finally:
        server.kill()
    assert client.returncode == 0, client.stderr
    assert int(client.stdout) == len(sizes)
    assert out.split() == ["fe80::c0a8:a%tenant3"], err


def _vxlan_frame(vni: int, inner: bytes) -> bytes:
    # RFC 7348 §5: flags 0x08 (I bit: VNI valid), 24 reserved bits, VNI, 8 reserved bits.
    return struct.pack("!B3xI", 0x08, vni << 8) + inner


def _inner(dst_mac: str, nonce: bytes) -> bytes:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    frame = (
        Ether(src="02:00:5e:00:01:0a", dst=dst_mac)
        / IP(src="192.168.0.10", dst="192.168.0.100")
        / UDP(sport=4000, dport=9)
        / nonce
    )
    return bytes(frame)


def _send_vxlan(ns: str, vni: int, payload: bytes, count: int) -> None:
    with netns(ns), socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        for _ in range(count):
            s.sendto(_vxlan_frame(vni, payload), ("fd63:6a62::2", 4789))
            time.sleep(0.01)


def _binding(status: dict[str, Any]) -> dict[str, int]:
    counters: dict[str, int] = status["tenants"]["tenant1"]["vni_binding"]
    return counters


def test_vni_spoofing_is_dropped_and_counted(lab3: LabState) -> None:
    pytest.importorskip("scapy", reason="scapy builds the crafted frames")
    service = lab3.namespaces["service"]
    with RealKernel() as kernel:
        tenant1_mac = kernel.links(service)["tenant1"].mac
    spoof, genuine = (
        b"SPOOF-" + secrets.token_hex(4).encode(),
        b"REAL-" + secrets.token_hex(4).encode(),
    )
    before = _binding(fresh_status(lab3))
    cap = Capture(service, ["tenant1", "tenant2", "tenant3"])
    try:
        # Tenant 2's appliance writes tenant 1's VNI ...
        _send_vxlan(lab3.namespaces["appliance2"], 1, _inner(tenant1_mac, spoof), 20)
        # ... and, as the control, tenant 1's own appliance sends the same kind of frame.
        _send_vxlan(lab3.namespaces["appliance1"], 1, _inner(tenant1_mac, genuine), 5)
        time.sleep(0.5)
        frames = cap.drain()
    finally:
        cap.close()
    seen = b"".join(f for fs in frames.values() for f in fs)
    assert spoof not in seen, "a frame with a spoofed VNI reached a service link"
    assert genuine in b"".join(frames["tenant1"]), "control frame from the right appliance lost"
    after = _binding(fresh_status(lab3))
    spoofed = after["vni_spoofed"] - before["vni_spoofed"]
    accepted = after["vxlan_accepted"] - before["vxlan_accepted"]
    assert spoofed == 20
    assert accepted >= 5


def test_gateway_status_and_tenant_cli(lab3: LabState) -> None:
    env = {**os.environ, "CJB_GATEWAY_CONFIG": str(lab3.run_dir / "gateway.json")}
    status = run_in(
        lab3.namespaces["gateway"], [sys.executable, "-m", "cjb.cli", "gateway", "status"], env=env
    )
    assert status.returncode == 0, status.stderr
    assert ": running" in status.stdout
    for k in (1, 2, 3):
        assert f"tenant tenant{k}  vni {k}" in status.stdout
    assert "dropped as VNI spoofing" in status.stdout
    listing = run_in(
        lab3.namespaces["gateway"],
        [sys.executable, "-m", "cjb.cli", "gateway", "tenant", "list"],
        env=env,
    )
    assert "tenant3" in listing.stdout


def test_appliance_agent_reattaches_a_removed_tunnel_port(lab3: LabState) -> None:
    ns = lab3.namespaces["appliance3"]
    with RealKernel() as kernel:
        kernel.del_link(ns, "cjb-vx0")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            state = kernel.links(ns).get("cjb-vx0")
            if state is not None and state.master == "br-lan" and state.up:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the agent did not restore cjb-vx0 on br-lan within 10 s")
    time.sleep(0.5)
    rows = run_demo(lab3)
    assert rows[2].translated.tenant == "tenant3"


def test_gateway_reconcile_is_idempotent_on_the_real_kernel(lab3: LabState) -> None:
    from cjb.common.netlink import apply
    from cjb.gateway.dataplane.config import load
    from cjb.gateway.dataplane.io_mode import set_fast_path
    from cjb.gateway.dataplane.kernel_spec import gateway_spec

    # The kernel fast path's programs live in the running gateway only (a spec built here
    # has none and would detach them): compare links and addresses in userspace mode.
    config = lab3.run_dir / "gateway.json"
    set_fast_path(config, "userspace", timeout=30)
    try:
        spec = gateway_spec(load(config))
        with netns(lab3.namespaces["gateway"]), RealKernel() as kernel:
            assert apply(kernel, spec) == []
    finally:
        set_fast_path(config, "kernel", timeout=30)


def test_down_leaves_nothing_of_the_run() -> None:
    from labkit import require

    require("nft", "curl")
    state = up(2, log=lambda _m: None)
    pids = [p.pid for p in state.processes]
    names = namespaces_of(state.run_id)
    assert len(names) == 2 * 2 + 3
    assert all(procs.alive(p) for p in pids)
    # A process the state file does not know (as `cjb lab exec` would start) dies too.
    with netns(state.namespaces["site1"]):
        stray = subprocess.Popen(["sleep", "300"], start_new_session=True)
    remaining = down(log=lambda _m: None, only=state.run_id)
    assert remaining == []
    assert namespaces_of(state.run_id) == set()
    assert not any(procs.alive(p) for p in pids)
    assert stray.wait(timeout=5) is not None
    assert not state.run_dir.exists()
    # Nothing leaked into the host namespace: no tagged link, no gateway nft table.
    with RealKernel() as kernel:
        tagged = [n for n, s in kernel.links(None).items() if (s.alias or "").startswith("cjb:")]
    assert tagged == []
    nft = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=False)
    assert "cjb_gw" not in nft.stdout
