"""Faults on the enrolled lab: kill -9 under traffic, WAN cuts,
an MTU black hole, and a key-material scan of the whole run's logs.

One lab for the module: 3 appliances enrolled over HTTPS, VXLAN inside WireGuard
(wireguard-go), the same product commands as `cjb lab up --transport wireguard`.
CI: 3 kills of each kind and a 1 s cut; CJB_LONG=1: 20 kills each and 1 s / 30 s / 5 min cuts.
(tests/test_lab_enroll.py covers 5 gateway kills and a 30 s cut; this extends the counts,
adds the data-plane-only and agent kills, and checks kernel objects and allocations.)

The translator workers are asyncio tasks inside the data-plane process (`cjb gateway run`,
gateway/dataplane/daemon.py), not processes of their own: "kill -9 of the workers" is the
kill -9 of that process while the API process keeps running.
"""

from __future__ import annotations

import base64
import json
import math
import os
import random
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import labkit
import pytest
from reskit import Report, Tally, check_registry, long_run, scale
from stormkit import ECHO_PROBE, LINK_STORM, alternating_schedule, p99, pooled, split_by_window

from cjb.common.netlink import Link, Veth, netns
from cjb.common.netlink.nft import counters, tables
from cjb.common.netlink.real import RealKernel
from cjb.common.wireguard.userspace import _pids_of
from cjb.lab import enrolled as enrolled_lab
from cjb.lab import procs
from cjb.lab.control import WIREGUARD_SOCKET_DIR, cli_argv
from cjb.lab.demo import curl
from cjb.lab.state import LabState, ProcessRecord
from cjb.lab.topology import LabNames, tenant_name

pytestmark = [pytest.mark.root, pytest.mark.slow]

TENANTS = 3
BACK_WITHIN = 15.0  # service restored within 15 s
SERVICE = "192.168.0.100"
RECOVER_WITHIN = 10.0  # a flooding LAN is served again this long after the flood stops


@pytest.fixture(scope="module")
def lab() -> Iterator[LabState]:
    with labkit.wireguard_lab(TENANTS, "curl", "ping") as state:
        yield state


def _wait_for(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"{what} not met within {within}s"
        time.sleep(0.1)


def _page(state: LabState, k: int, timeout: float = 1) -> str | None:
    return curl(state.namespaces[f"site{k}"], f"http://{SERVICE}/", timeout).tenant


def _wait_pages(state: LabState, tenants: list[int], within: float) -> float:
    start, pending = time.monotonic(), set(tenants)
    while pending:
        for k in sorted(pending):
            got = _page(state, k)
            assert got in (None, tenant_name(k)), f"site{k} received {got}'s page"
            if got == tenant_name(k):
                pending.discard(k)
        assert time.monotonic() - start < within, f"tenants {sorted(pending)} not back"
    return time.monotonic() - start


def kernel_objects(state: LabState) -> dict[str, object]:
    """Everything of this run the kernel holds: namespaces, links per namespace (name and
    kind), nftables tables per namespace, wireguard-go sockets and processes."""
    names = LabNames(state.run_id)
    links, nft = {}, {}
    with RealKernel() as kernel:
        for node, ns in sorted(state.namespaces.items()):
            links[node] = sorted(kernel.links(ns))
            nft[node] = sorted(tables(ns))
    wg = {
        node: len(_pids_of("wireguard-go", names.wg_ifname(node)))
        for node in ["gateway", *(f"appliance{k}" for k in range(1, TENANTS + 1))]
    }
    return {
        "namespaces": sorted(labkit.namespaces_of(state.run_id)),
        "links": links,
        "nft": nft,
        "wg_sockets": sorted(p.name for p in WIREGUARD_SOCKET_DIR.glob(f"*{state.run_id}*")),
        "wg_processes": wg,
    }


def _agent_status(state: LabState, node: str) -> dict[str, object]:
    try:
        data: dict[str, object] = json.loads((state.run_dir / node / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data


def _registry_path(state: LabState) -> Path:
    from cjb.gateway.control.statedir import StateDir

    return StateDir(enrolled_lab.gateway_state_dir(state.run_dir)).registry


def _allocations(state: LabState) -> list[tuple[object, ...]]:
    from cjb.gateway.control.registry import Registry

    with Registry.open(_registry_path(state)) as reg:
        return sorted(
            (t.tenant, t.vni, str(t.overlay_address), t.wireguard_public_key)
            for t in reg.desired_tunnels()
        )


def _restart(
    state: LabState, victims: list[ProcessRecord], env: dict[str, str] | None, also: list[int]
) -> None:
    """kill -9 the victims (and the pids `also`), then start the victims again."""
    for p in victims:
        os.kill(p.pid, signal.SIGKILL)
    for pid in also:
        os.kill(pid, signal.SIGKILL)
        _wait_for(lambda pid=pid: not procs.alive(pid), 10, f"pid {pid} gone")
    for p in victims:
        _wait_for(lambda p=p: not procs.alive(p.pid), 10, f"pid {p.pid} gone")
        state.processes.remove(p)
    for p in victims:
        pid = procs.spawn(state.namespaces[p.node], p.argv, Path(p.log), env)
        state.processes.append(ProcessRecord(p.node, pid, p.argv, p.log))
    state.save()


def _victims(state: LabState, kind: str, round_: int) -> tuple[list[ProcessRecord], dict | None]:
    alive = [p for p in state.processes if procs.alive(p.pid)]
    if kind == "gateway":
        return [p for p in alive if p.node == "gateway"], None
    if kind == "dataplane":
        return [p for p in alive if p.node == "gateway" and "run" in p.argv], None
    k = round_ % TENANTS + 1
    env = {"CJB_WIREGUARD_IFNAME": LabNames(state.run_id).wg_ifname(f"appliance{k}")}
    return [p for p in alive if p.node == f"appliance{k}"], env


@pytest.mark.parametrize("kind", ["gateway", "dataplane", "agent"])
def test_kill9_under_traffic(lab: LabState, kind: str, report: Report) -> None:
    rounds = scale(3, 20)
    everyone = list(range(1, TENANTS + 1))
    _wait_pages(lab, everyone, 30)
    before_objects = kernel_objects(lab)
    before_alloc = _allocations(lab)
    pingers = []
    for k in everyone:
        with netns(lab.namespaces[f"site{k}"]):
            pingers.append(
                subprocess.Popen(
                    ["ping", "-i", "0.2", SERVICE],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
    took: list[float] = []
    rounds_ok = Tally()
    failures: list[str] = []
    try:
        for r in range(rounds):
            try:
                victims, env = _victims(lab, kind, r)
                assert victims, f"no {kind} process to kill"
                if kind == "dataplane":
                    assert len(victims) == 1, [v.argv for v in victims]
                # Every other gateway round, its wireguard-go dies too (a host or container
                # restart): the data plane must re-create the interface and re-handshake.
                also = []
                if kind == "gateway" and r % 2 == 1:
                    also = _pids_of("wireguard-go", LabNames(lab.run_id).wg_ifname("gateway"))
                _restart(lab, victims, env, also)
                took.append(_wait_pages(lab, everyone, BACK_WITHIN))
                if kind == "agent":  # the new agent itself is up and adopted its tunnel
                    node = victims[0].node
                    pid = next(p.pid for p in lab.processes if p.node == node)
                    _wait_for(
                        lambda node=node, pid=pid: _agent_status(lab, node).get("pid") == pid,
                        BACK_WITHIN,
                        f"{node} agent up again",
                    )
                    assert _agent_status(lab, node)["phase"] == "enrolled"
                assert kernel_objects(lab) == before_objects, "kernel objects differ"
                assert _allocations(lab) == before_alloc, "allocations differ"
                rounds_ok.add(True)
            except AssertionError as e:
                rounds_ok.add(False, f"round {r + 1}")
                failures.append(f"round {r + 1}: {str(e)[:1500]}")
    finally:
        for p in pingers:
            p.kill()
            p.wait()
    back = f"back in max {max(took):.1f}s / mean {sum(took) / len(took):.1f}s" if took else ""
    report(
        f"kill9-{kind}", *rounds_ok.counts,
        back
        + (" (every 2nd with wireguard-go killed too)" if kind == "gateway" else "")
        + f" {rounds_ok.lost_note()}".rstrip(),
        means="kill -9 rounds after which every site got its page back within "
        f"{BACK_WITHIN:.0f}s with kernel objects and VNI/overlay allocation unchanged",
    )  # fmt: skip
    assert not failures, failures
    check_registry(_registry_path(lab))


SEND_VXLAN = """
import socket, sys
src, dst = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, 78, 1)  # IPV6_FREEBIND: a source we do not own
s.bind((src, 0))
for vni in sys.argv[3:]:
    frame = b"\\xff" * 6 + bytes.fromhex("02000000bb01") + b"\\x88\\xb5" + b"spoof".ljust(46)
    vxlan = bytes([0x08, 0, 0, 0]) + int(vni).to_bytes(3, "big") + b"\\x00"  # RFC 7348 §5
    for _ in range(5):
        s.sendto(vxlan + frame, (dst, 4789))
"""
GATEWAY_OVERLAY = "fd63:6a62:77::1"  # gateway/control/settings.py default


def test_overlay_spoofing_matrix(lab: LabState, report: Report) -> None:
    """Every appliance claims every other tenant's overlay address (WireGuard cryptokey
    routing drops it: neither VNI counter moves) and sends every other tenant's VNI from
    its own address (the VNI binding counts and drops it: the tc guard first, nftables
    behind it; the status sums both layers per tenant)."""
    status = labkit.fresh_status(lab)
    overlay = {k: status["tenants"][tenant_name(k)]["appliance"] for k in range(1, TENANTS + 1)}
    vni = {k: status["tenants"][tenant_name(k)]["vni"] for k in range(1, TENANTS + 1)}

    def spoofed_now() -> dict[int, int]:
        tenants = labkit.fresh_status(lab)["tenants"]
        return {k: tenants[tenant_name(k)]["vni_binding"]["vni_spoofed"] for k in overlay}

    before = spoofed_now()
    tried = 0
    for i in range(1, TENANTS + 1):
        ns = lab.namespaces[f"appliance{i}"]
        others = [j for j in range(1, TENANTS + 1) if j != i]
        for j in others:  # a foreign overlay source with that tenant's own VNI
            run = labkit.python_in(ns, SEND_VXLAN, overlay[j], GATEWAY_OVERLAY, str(vni[j]))
            assert run.returncode == 0, run.stderr
        run = labkit.python_in(
            ns, SEND_VXLAN, overlay[i], GATEWAY_OVERLAY, *(str(vni[j]) for j in others)
        )
        assert run.returncode == 0, run.stderr
        tried += 10 * len(others)
    expect_spoofed = 5 * (TENANTS - 1)
    _wait_for(
        lambda: all(
            n >= before[k] + expect_spoofed for k, n in spoofed_now().items()
        ),
        5, "forged VNIs counted",
    )  # fmt: skip
    after = spoofed_now()
    spoofed = sum(after[k] - before[k] for k in vni)
    forged = expect_spoofed * TENANTS  # own-address packets carrying a foreign VNI
    report(
        "overlay-spoofing", forged, min(spoofed, forged), max(forged - spoofed, 0),
        f"{spoofed} forged VNIs counted by the VNI binding (tc guard + nftables); "
        f"{tried - forged} foreign-source packets sent too (WireGuard drops them uncounted: "
        "the exact count above shows none of them reached the binding)",
        means="packets with another tenant's VNI counted and dropped by the gateway's "
        "VNI binding",
    )  # fmt: skip
    # Exactly the own-address forgeries: the foreign-source ones never got past WireGuard.
    assert spoofed == forged, (before, after)


CUT = """table inet cjbres_wancut {
\tchain forward {
\t\ttype filter hook forward priority -50; policy accept;
\t\tiifname "ap2" drop
\t\toifname "ap2" drop
\t}
}
"""


def test_wan_cut_recovers_by_itself(lab: LabState, report: Report) -> None:
    cuts = [1.0, 30.0, 300.0] if long_run() else [1.0]
    service = lab.namespaces["service"]
    figures = []
    port, size = 5202, 8 << 20
    sink = labkit.spawn_python(service, SINK, str(port))
    labkit.wait_port(service, port)
    recovered = Tally()
    failures: list[str] = []
    for seconds in cuts:
        try:
            figures.append(_one_wan_cut(lab, seconds, port, size))
            recovered.add(True)
        except AssertionError as e:
            recovered.add(False, f"{seconds:.0f}s cut")
            failures.append(f"{seconds:.0f}s cut: {str(e)[:1500]}")
    sink.kill()
    sink.wait()
    report(
        "wan-cut", *recovered.counts, "; ".join(figures) + f" {recovered.lost_note()}".rstrip(),
        means="WAN cuts (real: no page during it) after which pages came back by themselves "
        "and a bulk TCP transfer across the cut completed",
    )  # fmt: skip
    assert not failures, failures


def _one_wan_cut(lab: LabState, seconds: float, port: int, size: int) -> str:
    """One cut of `seconds` under bulk TCP from site2; its figures, or AssertionError."""
    internet = lab.namespaces["internet"]
    _wait_pages(lab, [2], 30)
    # Bulk TCP from site2, spread over the cut (TCP's own retransmission carries it
    # across; the socket timeout covers the cut).
    bulk = labkit.spawn_python(
        lab.namespaces["site2"], BULK, SERVICE, str(size), str(port),
        str(seconds + 60), str(seconds + 2),
    )  # fmt: skip
    try:
        time.sleep(0.5)
        with netns(internet):
            subprocess.run(["nft", "-f", "-"], input=CUT, text=True, check=True)
        try:
            start = time.monotonic()
            # The cut is real: no page while it lasts (the probe fits inside 1 s).
            assert _page(lab, 2, timeout=min(0.5, seconds / 2)) is None, "the cut let a page by"
            time.sleep(max(0.0, seconds - (time.monotonic() - start)))
        finally:
            with netns(internet):
                subprocess.run(["nft", "delete", "table", "inet", "cjbres_wancut"], check=True)
        took = _wait_pages(lab, [2], 60)
        out, err = bulk.communicate(timeout=seconds + 120)
    finally:
        bulk.kill()
        bulk.wait()
    done = out.split()
    assert bulk.returncode == 0 and done[:1] == [str(size)], f"bulk TCP: {out} {err}"
    assert _page(lab, 1) == tenant_name(1)
    return (
        f"{seconds:.0f}s cut -> pages back in {took:.1f}s, {size >> 20} MiB TCP across it "
        f"done in {done[1]}s"
    )


BLACK_HOLE = """table inet cjbres_mtuhole {
\tcounter eaten { }
\tchain forward {
\t\ttype filter hook forward priority -50; policy accept;
\t\tmeta length > 1500 counter name eaten drop
\t}
}
"""

SINK = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[1]))); s.listen(8); s.settimeout(120)
while True:
    c, _ = s.accept()
    n = 0
    while chunk := c.recv(1 << 16):
        n += len(chunk)
    c.sendall(str(n).encode()); c.close()
"""

BULK = """
import socket, sys, time
n, port = int(sys.argv[2]), int(sys.argv[3])
timeout, spread = float(sys.argv[4]), float(sys.argv[5])
chunk = 1 << 16
start = time.monotonic()
with socket.create_connection((sys.argv[1], port), timeout=timeout) as s:
    for i in range(0, n, chunk):  # spread over `spread` seconds, so a cut lands mid-transfer
        s.sendall(b"x" * min(chunk, n - i))
        time.sleep(spread * chunk / n)
    s.shutdown(socket.SHUT_WR)
    got = s.recv(64)
print(got.decode(), round(time.monotonic() - start, 2))
"""


SOURCE = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[1]))); s.listen(8); s.settimeout(120)
while True:
    c, _ = s.accept()
    n = int(c.recv(64).decode())
    c.sendall(b"y" * n); c.close()
"""

DOWNLOAD = """
import socket, sys
n, port = int(sys.argv[2]), int(sys.argv[3])
with socket.create_connection((sys.argv[1], port), timeout=20) as s:
    s.sendall(str(n).encode())
    got = 0
    while chunk := s.recv(1 << 16):
        got += len(chunk)
print(got)
"""


def _download(lab: LabState, k: int, port: int, size: int) -> tuple[bool, str]:
    run = labkit.python_in(
        lab.namespaces[f"site{k}"], DOWNLOAD, SERVICE, str(size), str(port), timeout=60
    )
    return run.returncode == 0 and run.stdout.split()[:1] == [str(size)], run.stdout + run.stderr


def _vxlan_tx_errors(lab: LabState, k: int) -> int:
    counters = _agent_status(lab, f"appliance{k}").get("counters")
    return int(counters.get("vxlan_tx_errors", 0)) if isinstance(counters, dict) else 0


def _df_ping(lab: LabState, k: int) -> tuple[str, str]:
    """A 1,472-byte payload, DF set: 1,500 bytes of IPv4, a full LAN frame. Returns
    "passed", "frag-needed" (the answer, or the host's PMTU cache refusing after one) or
    "lost" (the black hole), and ping's output."""
    run = labkit.run_in(
        lab.namespaces[f"site{k}"],
        ["ping", "-n", "-M", "do", "-s", "1472", "-c", "3", "-W", "2", SERVICE],
        timeout=30,
    )
    out = run.stdout + run.stderr
    if re.search(r" [1-3] received", out):
        return "passed", out
    if re.search(r"Frag needed and DF set \(mtu = \d+\)|message too long, mtu=\d+", out):
        return "frag-needed", out
    return "lost", out


def _bulk(lab: LabState, k: int, port: int, size: int) -> tuple[bool, str]:
    run = labkit.python_in(
        lab.namespaces[f"site{k}"], BULK, SERVICE, str(size), str(port), "20", "0", timeout=60
    )
    return run.returncode == 0 and run.stdout.split()[:1] == [str(size)], run.stdout + run.stderr


def test_mtu_black_hole(lab: LabState, report: Report) -> None:
    """The internet drops every packet over 1,500 bytes and says nothing, while the links
    on both sides have an MTU of 1,700: only the tunnel's own sizing (common/tunnel_mtu.py)
    keeps full-size LAN traffic alive. Nothing may have been eaten."""
    internet, service = lab.namespaces["internet"], lab.namespaces["service"]
    port, size = 5201, 4 << 20
    sink = labkit.spawn_python(service, SINK, str(port))
    source = labkit.spawn_python(service, SOURCE, str(port + 1))
    try:
        labkit.wait_port(service, port)
        labkit.wait_port(service, port + 1)
        with netns(internet):
            subprocess.run(["nft", "-f", "-"], input=BLACK_HOLE, text=True, check=True)
        try:
            # Without DF, a packet the tunnel cannot carry whole is dropped at the appliance's
            # VXLAN port (VTEPs never fragment, RFC 7348 §4.3) and counted there; site2 has
            # not learnt the path MTU, so its full-size packet meets exactly that.
            errors_before = _vxlan_tx_errors(lab, 2)
            nodf = labkit.run_in(
                lab.namespaces["site2"],
                ["ping", "-n", "-M", "dont", "-s", "1472", "-c", "2", "-W", "1", SERVICE],
                timeout=30,
            )
            try:
                _wait_for(
                    lambda: _vxlan_tx_errors(lab, 2) >= errors_before + 2,
                    10,
                    "appliance2 counting the oversized non-DF packets (vxlan_tx_errors)",
                )
                counted = ""
            except AssertionError as e:
                counted = str(e)
            ping, ping_out = _df_ping(lab, 1)
            bulk_ok, bulk_out = _bulk(lab, 1, port, size)
            down_ok, down_out = _download(lab, 1, port + 1, size)
            eaten = counters(internet, "inet", "cjbres_mtuhole")["eaten"][0]
        finally:
            with netns(internet):
                subprocess.run(["nft", "delete", "table", "inet", "cjbres_mtuhole"], check=True)
        carried = Tally()
        carried.add(ping != "lost", "DF ping lost")
        carried.add(bulk_ok, "TCP up failed")
        carried.add(down_ok, "TCP down failed")
        report(
            "mtu-black-hole", *carried.counts,
            f"1472-byte DF ping: {ping}; {size >> 20} MiB TCP up: {bulk_ok}, down: {down_ok}; "
            f"{eaten} packets over 1500 eaten on the WAN; non-DF 1500: "
            f"{'dropped and counted at the appliance' if not counted else 'NOT counted'} "
            f"{carried.lost_note()}".rstrip(),
            means="transfers through the silent 1500-byte black hole that completed (DF ping "
            "answered or told frag-needed, 4 MiB TCP up, 4 MiB TCP down)",
        )  # fmt: skip
        assert " 0 received" in nodf.stdout, nodf.stdout
        assert not counted, counted
        assert ping != "lost", f"1472-byte DF ping got neither a reply nor frag-needed:\n{ping_out}"
        assert bulk_ok, f"bulk TCP {size} bytes up through the black hole: {bulk_out}"
        assert down_ok, f"bulk TCP {size} bytes down through the black hole: {down_out}"
        assert eaten == 0, f"the black hole ate {eaten} packets: the tunnel sent some over 1500"
        _wait_pages(lab, [1], 30)
    finally:
        for p in (sink, source):
            p.kill()
            p.wait()


def _storm_frames() -> list[str]:
    """One of each class the WAN filter rate-limits or keeps on the LAN: ARP for the service
    address, mDNS (discovery), a plain broadcast, an IPv6 all-nodes multicast."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import ARP, Ether

    mac = "02:00:5e:00:01:0a"
    frames = [
        Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
        / ARP(op=1, hwsrc=mac, psrc="192.168.0.10", pdst="192.168.0.100"),
        Ether(src=mac, dst="01:00:5e:00:00:fb")
        / IP(src="192.168.0.10", dst="224.0.0.251", ttl=255)
        / UDP(sport=5353, dport=5353)
        / (b"\x00" * 12),
        Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
        / IP(src="192.168.0.10", dst="192.168.0.255")
        / UDP(sport=4000, dport=9999)
        / b"storm",
        Ether(src=mac, dst="33:33:00:00:00:01")
        / IPv6(src="fe80::5eff:fe00:10a", dst="ff02::1", hlim=255)
        / UDP(sport=4000, dport=9999)
        / b"storm",
    ]
    return [bytes(f).hex() for f in frames]


def _wan_counters(lab: LabState, k: int) -> dict[str, int]:
    c = counters(lab.namespaces[f"appliance{k}"], "bridge", "cjb_wan")
    return {name: packets for name, (packets, _bytes) in c.items()}


@contextmanager
def _spare_link(ns: str, run_id: str) -> Iterator[str]:
    """A veth pair inside `ns` that leads nowhere: the control condition's storm goes there,
    so the generator and the kernel's receive path cost the same as in the treatment, but
    nothing of CJB sees a frame. Removed on every exit (the lab's `down` would, too)."""
    name, peer = f"stc{run_id}", f"stp{run_id}"
    with RealKernel() as kernel:
        kernel.add_link(ns, Link(name, Veth(peer)), tag=f"cjbstorm{run_id}")
        kernel.set_link(ns, name, up=True)
        kernel.set_link(ns, peer, up=True)
    try:
        yield name
    finally:
        with RealKernel() as kernel:
            kernel.del_link(ns, name)


PROBE_INTERVAL = 0.005  # 200 echo requests/s from site 2: ~2,000 samples per side in CI
# Probes sent in a window's first GUARD seconds do not count: what the previous window left
# queued (the agent's mDNS gate backlog, the token bucket's burst of `burst` ARPs crossing
# at every storm onset) settles within it; a sustained storm is what the bar is about.
GUARD = 0.25
# p99 within +20%. EPSILON, an absolute floor, from A/A runs (both sides
# storming into spare links, 15 pairs, ~2,300 samples a side): on a quiet host tenant 2's
# p99 is 2.6-4.0 ms (two wireguard-go hops and the Python worker each way, not the sub-ms
# of a veth) and two identical conditions differed by up to 1.2 ms (3.87 vs 2.66); the
# probe resolves microseconds, so the floor is scheduling, not measurement.
FACTOR, EPSILON = 1.2, 1.0  # ms
# When the probe cannot keep its own timer, other jobs own the host: both sides' p99 were
# 200-450 ms then, 0.84-1.39x apart between storm and control (and 0.93x A/A), so only
# this coarse bound is asserted.
OVERLOADED_FACTOR = 2.0
TRIM = 1  # windows per side left out of the asserted p99 (stormkit.pooled says why)


def _alternating_storm(
    lab: LabState, control: str, treatment: str, pairs: int, window: float, fps: int
) -> tuple[list[tuple[str, list[float]]], list[tuple[str, float, float]], dict[str, int], int, int]:
    """Site 1 storms `control` and `treatment` in alternating windows while site 2 probes the
    service address without a pause. Returns tenant 2's RTTs per window, the windows as run,
    frames sent per link, probes sent and probes answered."""
    rng = random.Random(lab.run_id)  # noqa: S311 -- a window order, not a secret
    plan = alternating_schedule(control, treatment, pairs, window, rng)
    seconds = sum(s for _, s in plan)
    probe = labkit.spawn_python(
        lab.namespaces["site2"], ECHO_PROBE, SERVICE, str(PROBE_INTERVAL), str(seconds + 3)
    )
    try:
        storm = labkit.spawn_python(
            lab.namespaces["site1"], LINK_STORM, str(fps),
            ",".join(f"{link}:{s}" for link, s in plan), *_storm_frames(),
        )  # fmt: skip
        try:
            out, err = storm.communicate(timeout=seconds + 60)
        finally:
            storm.kill()
            storm.wait()
        assert storm.returncode == 0, err
        probed, perr = probe.communicate(timeout=30)
        assert probe.returncode == 0, perr
    finally:
        probe.kill()
        probe.wait()
    storm_result, probe_result = json.loads(out), json.loads(probed)
    ran = [(link, began, ended) for link, began, ended in storm_result["ran"]]
    replies = [(sent, rtt) for sent, rtt in probe_result["replies"]]
    windows = split_by_window(replies, ran, GUARD)
    return windows, ran, storm_result["sent"], probe_result["sent"], len(replies)


def test_storm_stays_within_wan_rate(lab: LabState, report: Report) -> None:
    """Site 1 storms; tenant 2's latency is measured against a control condition: the same
    generator at the same rate sending into a spare veth pair in site 1's namespace (its
    cost on the shared 2-core host is then the same on both sides) vs. into site 1's real
    LAN link. Control and treatment windows alternate (pairs in random order) and the p99
    over all treatment samples is compared with the p99 over all control samples, so slow
    drift of the shared host falls on both sides. Asserted: the WAN filter's group classes
    let through no more than the configured rate (+ burst) and tenant 2's p99, without each
    side's worst window, rises by at most 20% (+ EPSILON)."""
    pytest.importorskip("scapy", reason="scapy builds the storm frames")
    pairs, window = scale(15, 60), 1.0
    fps = scale(20_000, 0)  # CI: 66x the WAN filter's group limit; long: as fast as it goes
    _wait_pages(lab, [1, 2], 30)
    site1 = lab.namespaces["site1"]
    # Warm: neighbour caches and first-packet paths, outside the measurement.
    labkit.python_in(lab.namespaces["site2"], ECHO_PROBE, SERVICE, "0.05", "0.5")
    before = _wan_counters(lab, 1)
    with _spare_link(site1, lab.run_id) as spare:
        windows, ran, sent, probes, answered = _alternating_storm(
            lab, spare, "eth0", pairs, window, fps
        )
    after = _wan_counters(lab, 1)
    stormed = sum(ended - began for link, began, ended in ran if link == "eth0")
    onsets = sum(1 for link, _, _ in ran if link == "eth0")
    delta = {k: after[k] - before.get(k, 0) for k in after}
    group_passed = delta["arp_ok"] + delta["discovery_ok"] + delta["ndp_ok"]
    pps, burst = 100, 200  # FilterSpec defaults (appliance/wan_filter.py), per class
    # The bucket refills during the control windows: a full burst at every storm onset.
    allowed = 3 * (pps * (stormed + 2) + burst * onsets)
    over = max(math.ceil(group_passed - allowed), 0)
    report(
        "lan-storm", sent["eth0"], sent["eth0"] - min(over, sent["eth0"]), min(over, sent["eth0"]),
        f"{sent['eth0'] / max(stormed, 1e-9):.0f} fps storm over {onsets} windows "
        f"({stormed:.0f}s), {group_passed} crossed the WAN (allowed {allowed:.0f}: 3x{pps}/s + "
        f"burst), dropped {delta['group_limited']} limited + {delta['lan_only']} LAN-only; "
        f"tenant2 answered {answered}/{probes} probes (latency in the test's assert)",
        means="storm frames kept within the WAN filter's policy (dropped, or within the "
        "rate + burst); lost = frames that crossed the WAN beyond it",
    )  # fmt: skip
    assert sent["eth0"] > 0 and sent[spare] > 0, sent
    assert group_passed <= allowed, (delta, allowed)
    assert delta["group_limited"] + delta["lan_only"] > 0, delta
    assert answered >= 0.95 * probes, f"tenant 2 lost {probes - answered} of {probes} probes"
    seconds = ran[-1][2] - ran[0][1]
    p_quiet, p_storm = p99(pooled(windows, spare)), p99(pooled(windows, "eth0"))
    quiet, stormy = pooled(windows, spare, TRIM), pooled(windows, "eth0", TRIM)
    # Each side holds ~1/3 of the probes (the guards and the probe's margins take the rest).
    assert min(len(quiet), len(stormy)) >= 0.2 * probes, (len(quiet), len(stormy), probes)
    t_quiet, t_storm = p99(quiet), p99(stormy)
    # The prober itself starved (it sends on a timer): other jobs own the host, and the p99
    # of both sides is theirs; only a coarse bound means anything then.
    starved = probes < 0.8 * (seconds + 3) / PROBE_INTERVAL
    factor = OVERLOADED_FACTOR if starved else FACTOR
    figures = (
        f"tenant2 p99 {p_quiet:.2f} (control) -> {p_storm:.2f} ms (storm), "
        f"{(p_storm - p_quiet) / p_quiet:+.0%}; without each side's worst window "
        f"{t_quiet:.2f} (n={len(quiet)}) -> {t_storm:.2f} ms (n={len(stormy)}), "
        f"{(t_storm - t_quiet) / t_quiet:+.0%}" + (" [host overloaded]" if starved else "")
    )
    print(f"lan-storm latency: {figures} (control: the same storm into a spare veth)")
    assert t_storm <= factor * t_quiet + EPSILON, figures


LAN_FLOOD_ATTACKER = "02:cb:00:00:0f:01"


def _lan_flood(n: int) -> list[bytes]:
    """A broken device / switching loop on site 1's LAN: random source MACs; broadcast and
    multicast UDP, unknown unicast, and ARP requests for the service address (its class
    in the WAN filter is rate-limited, not closed)."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import ARP, Ether

    rng = random.Random(20)  # noqa: S311 - reproducible junk MACs, not secrets
    frames = []
    for i in range(n):
        src = ("02" + rng.randbytes(5).hex()).encode()
        mac = b":".join(src[j : j + 2] for j in range(0, 12, 2)).decode()
        udp = IP(src="192.168.0.50", dst="192.168.0.255") / UDP(sport=4000, dport=9999)
        if i % 4 == 3:
            frames.append(
                Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
                / ARP(op=1, hwsrc=mac, psrc="192.168.0.50", pdst=SERVICE)
            )
            continue
        dst = ("ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:fb", "02:" + rng.randbytes(5).hex(":"))[i % 4]
        frames.append(Ether(src=mac, dst=dst) / udp / b"cjb-flood")
    return [bytes(f) for f in frames]


def _lan_spoofs() -> list[bytes]:
    """ARP claiming the service address (announcement, reply) and the client's address."""
    from scapy.layers.l2 import ARP, Ether

    mac = LAN_FLOOD_ATTACKER
    claims = [
        Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
        / ARP(op=op, hwsrc=mac, psrc=SERVICE, hwdst="ff:ff:ff:ff:ff:ff", pdst=SERVICE)
        for op in (1, 2)
    ]
    client = Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=mac, psrc="192.168.0.10", pdst=SERVICE
    )
    return [bytes(f) for f in (*claims, client)] * 5


def _appliance_status_shows(lab: LabState, k: int, wanted: dict[str, int]) -> str:
    """`cjb appliance status` once its counters reach `wanted` (the agent reads the filter's
    counters every check interval); returns the output."""
    argv = [*cli_argv("appliance", "status"), "--config", str(lab.run_dir / f"appliance{k}.json")]
    deadline = time.monotonic() + 10
    while True:
        shown = labkit.run_in(lab.namespaces[f"appliance{k}"], argv)
        assert shown.returncode == 0, shown.stderr
        values = dict(re.findall(r"^\s+(filter_\w+)\s+(\d+)$", shown.stdout, re.M))
        if all(int(values.get(f"filter_{n}", -1)) >= v for n, v in wanted.items()):
            return shown.stdout
        assert time.monotonic() < deadline, f"appliance status never showed {wanted}:\n{shown}"
        time.sleep(0.5)


def test_lan_flood_recovers_by_itself_and_shows_why(lab: LabState, report: Report) -> None:
    """Site 1's LAN floods (random source MACs) and spoofs ARP for the service address and
    for its client's own address. Per round: once it stops, site 1 gets its page with ONE
    curl within 10 s, nothing restarted; the appliance's WAN filter counts what it kept on
    the LAN (lan_only) and rate-limited (group_limited), the gateway counts the ARP claims
    of the service address that crossed; `cjb appliance status` and `cjb gateway status`
    show them."""
    pytest.importorskip("scapy", reason="scapy builds the flood")
    rounds, n = scale(2, 5), scale(6000, 30000)
    flood, spoofs = _lan_flood(n), _lan_spoofs()
    claims = 10  # the service-address claims in _lan_spoofs (2 kinds x 5)
    site1 = lab.namespaces["site1"]
    _wait_pages(lab, [1, 2], 30)
    pids = set(labkit.processes_of(lab))
    wan_before = _wan_counters(lab, 1)
    gw_before = labkit.fresh_status(lab)["tenants"][tenant_name(1)]["router"]["drops"]
    recovered: list[float] = []
    rounds_kept = Tally()
    for _ in range(rounds):
        for i in range(0, len(flood), 500):
            labkit.send_frames(site1, "eth0", flood[i : i + 500])
            time.sleep(0.05)
        time.sleep(0.5)  # the ARP class refills: every spoof crosses to the gateway
        labkit.send_frames(site1, "eth0", spoofs)
        ended = time.monotonic()
        got = _page(lab, 1, timeout=RECOVER_WITHIN + 5)
        if got == tenant_name(1):
            recovered.append(time.monotonic() - ended)
            rounds_kept.add(recovered[-1] <= RECOVER_WITHIN, "page back late")
        else:
            rounds_kept.add(False, "page not back")
    wan = {k: v - wan_before.get(k, 0) for k, v in _wan_counters(lab, 1).items()}
    status = labkit.fresh_status(lab)
    gw = status["tenants"][tenant_name(1)]["router"]["drops"]
    gw_moved = {r: v - gw_before.get(r, 0) for r, v in gw.items() if v != gw_before.get(r, 0)}
    on_time = [t for t in recovered if t <= RECOVER_WITHIN]
    report(
        "lan-flood-recovery-enrolled", *rounds_kept.counts,
        f"per round {n} flood + {len(spoofs)} spoof frames; "
        f"page back after {', '.join(f'{t:.1f}s' for t in recovered) or 'never'}; appliance "
        f"kept {wan['lan_only']} on the LAN, rate-limited {wan['group_limited']} "
        f"(arp_ok {wan['arp_ok']}); gateway dropped {gw_moved} {rounds_kept.lost_note()}".rstrip(),
        means=f"flood+spoof rounds after which site1's page came back with one curl within "
        f"{RECOVER_WITHIN:.0f}s (no process restart is asserted after the row)",
    )  # fmt: skip
    assert len(on_time) == rounds, f"page back after {recovered} (limit {RECOVER_WITHIN}s)"
    assert set(labkit.processes_of(lab)) == pids, "a process was restarted"
    # Three quarters of the flood is neither ARP for the service nor discovery: LAN-only.
    assert wan["lan_only"] >= rounds * (3 * n // 4), wan
    assert wan["group_limited"] > 0, wan
    assert gw_moved.get("arp-claims-service-address") == rounds * claims, gw_moved
    _appliance_status_shows(lab, 1, {k: wan_before.get(k, 0) + wan[k] for k in ("lan_only",)})
    gw_argv = [*cli_argv("gateway", "status"), "--config", str(lab.run_dir / "gateway.json")]
    shown = labkit.run_in(lab.namespaces["gateway"], gw_argv)
    assert shown.returncode == 0, shown.stderr
    assert f"arp-claims-service-address {gw['arp-claims-service-address']}" in shown.stdout


def _private_keys(run: Path) -> dict[Path, list[str]]:
    """Every private key of the run (PEM files, WireGuard keys, factory keys) -> the
    strings that would betray it in a log: base64 lines of the PEM body, raw base64, hex."""
    keys: dict[Path, list[str]] = {}
    for path in run.rglob("*"):
        if not path.is_file() or path.stat().st_size > 64 * 1024:
            continue
        text = path.read_text(errors="replace")
        if "PRIVATE KEY-----" in text:
            body = [ln for ln in text.splitlines() if ln and not ln.startswith("-----")]
            keys[path] = [ln for ln in body if len(ln) >= 32] + ["".join(body)]
        elif "public" not in path.name and (path.suffix == ".key" or "private" in path.name):
            raw = text.strip()
            try:
                decoded = base64.b64decode(raw, validate=True)
            except ValueError:
                decoded = b""
            if 32 <= len(decoded) <= 64:
                keys[path] = [raw, decoded.hex()]
    return keys


def test_private_keys_0600_and_absent_from_logs(lab: LabState, report: Report) -> None:
    run = lab.run_dir
    keys = _private_keys(run)
    wg_keys = [p for p in keys if "wireguard" in str(p)]
    scanned = [
        p for p in run.rglob("*")
        if p.is_file() and p not in keys and p.suffix in (".log", ".json", ".txt", "")
    ]  # fmt: skip
    needles = {n: path for path, ns in keys.items() for n in ns}
    leaks = []
    for p in scanned:
        text = p.read_text(errors="replace")
        leaks += [f"{needles[n]} in {p}" for n in needles if n in text]
    readable = [path for path in keys if path.stat().st_mode & 0o077]
    kept = Tally()
    for path in keys:
        leaked = any(leak.startswith(f"{path} in ") for leak in leaks)
        kept.add(path not in readable and not leaked, "readable or in a log")
    report(
        "keys-in-logs", *kept.counts,
        f"{len(keys)} private keys ({len(wg_keys)} WireGuard), {len(scanned)} logs/status "
        f"files scanned {kept.lost_note()}".rstrip(),
        means="private keys of the run that are 0600 and appear in no log or status file",
    )  # fmt: skip
    assert len(wg_keys) >= TENANTS + 1, sorted(map(str, keys))
    assert not readable, f"{readable} readable by group/others"
    assert not leaks, leaks
