"""The trust boundary's pieces: the nftables input policies as text (fast), and the tc
VXLAN guard (common/vxlan_guard) on a real veth between two namespaces this test creates.

    cjbvg<run>-a  eth0 fd00:9::1/64 10.99.0.1/24 ── veth ── eth0 fd00:9::2/64 10.99.0.2/24
                                                        cjbvg<run>-b: the guard on eth0's
                                                        ingress, UDP sockets on 4789

The lab tests (tests/resilience/test_underlay_boundary.py) show the whole path; these pin the
program's parsing: which packets reach a socket on the VXLAN port and how each is counted.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cjb.appliance.wan_input import InputSpec, input_table
from cjb.common.netlink import Existing, Link, Namespace, NetworkSpec, Veth, VethPeer, apply, netns
from cjb.common.netlink import remove as remove_spec
from cjb.common.netlink.real import RealKernel
from cjb.common.vxlan_guard.guard import peer_bytes
from cjb.gateway.dataplane.config import from_model, read_model
from cjb.gateway.dataplane.vni_binding import binding_table

WG_KEY = "A" * 43 + "="


def _gateway_cfg(tmp_path: Path, wireguard: bool, **extra: object) -> object:
    import json

    body: dict[str, object] = {"tenants": {}, **extra}
    if wireguard:
        key = tmp_path / "wg.key"
        key.write_text(WG_KEY + "\n")
        body["wireguard"] = {"ifname": "wg-gw", "private_key_file": str(key)}
        body["tenants"] = {
            "t1": {"vni": 7, "appliance": "fd63:6a62:77::7", "wireguard_public_key": WG_KEY}
        }
    else:
        body["underlay"] = {"address": "fd00::1"}
        body["tenants"] = {"t1": {"vni": 7, "appliance": "fd00::7"}}
    path = tmp_path / "gw.json"
    path.write_text(json.dumps(body))
    return from_model(path, read_model(path))


def _rules(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def test_gateway_input_drops_by_default_and_takes_vxlan_only_from_wireguard(
    tmp_path: Path,
) -> None:
    cfg = _gateway_cfg(tmp_path, wireguard=True)
    rules = _rules(binding_table(cfg).body)  # type: ignore[arg-type]
    assert "type filter hook input priority filter - 10; policy drop;" in rules
    outside = 'iifname != "wg-gw" udp dport 4789 counter name vxlan_outside_tunnel drop'
    # VXLAN is judged before conntrack could call a forged packet a "reply".
    assert rules.index(outside) < rules.index("ct state established,related accept")
    assert rules.index(outside) < rules.index("udp dport 4789 jump vxlan")
    assert "udp dport 51820 accept" in rules
    assert "tcp dport { 22, 8443 } accept" in rules  # the defaults: SSH and the API
    assert rules[-1] == "}" and "counter name input_dropped drop" in rules
    assert "@th,96,24 7 ip6 saddr fd63:6a62:77::7 counter name ok_t1 accept" in rules


def test_gateway_trusted_link_and_operator_firewall(tmp_path: Path) -> None:
    plain = _rules(binding_table(_gateway_cfg(tmp_path, wireguard=False)).body)  # type: ignore[arg-type]
    assert not any("iifname !=" in r for r in plain)  # VXLAN comes from the underlay here
    assert "udp dport 4789 jump vxlan" in plain and "policy drop;" in " ".join(plain)
    own = _gateway_cfg(tmp_path, wireguard=True, host_input={"drop_others": False})
    rules = _rules(binding_table(own).body)  # type: ignore[arg-type]
    assert "type filter hook input priority filter - 10; policy accept;" in rules
    assert 'iifname != "wg-gw" udp dport 4789 counter name vxlan_outside_tunnel drop' in rules
    assert "ct state established,related accept" not in rules


def test_appliance_input_policy() -> None:
    gw = ipaddress.IPv6Address("fd63:6a62:77::1")
    rules = _rules(input_table(InputSpec(7, 4789, gw, "wg0", ("br-lan",))).body)
    assert "type filter hook input priority filter - 10; policy drop;" in rules
    outside = 'iifname != "wg0" udp dport 4789 counter name vxlan_outside_tunnel drop'
    assert rules.index(outside) < rules.index('iifname { "br-lan" } accept')
    assert rules.index(outside) < rules.index("ct state established,related accept")
    assert "udp dport 4789 ip6 saddr fd63:6a62:77::1 accept" in rules
    assert "udp dport 4789 counter name vxlan_unbound drop" in rules
    assert "counter name wan_dropped drop" in rules
    trusted = _rules(input_table(InputSpec(7, 4789, gw, None, ("br-lan",))).body)
    assert not any("vxlan_outside_tunnel drop" in r for r in trusted)


def test_ipv4_sources_compare_as_mapped_addresses() -> None:
    assert peer_bytes(ipaddress.IPv4Address("10.99.0.1")) == bytes(10) + b"\xff\xff\x0a\x63\x00\x01"
    assert (
        peer_bytes(ipaddress.IPv6Address("fd00:9::1")) == ipaddress.IPv6Address("fd00:9::1").packed
    )


# -- the program on a real kernel ----------------------------------------------------------


@pytest.fixture
def pair() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces, veth and tc filters")
    from cjb.common.vxlan_guard import GuardError, VxlanGuard

    try:
        VxlanGuard().close()
    except GuardError as exc:
        pytest.skip(str(exc))
    prefix = f"cjbvg{secrets.token_hex(2)}-"
    a, b = prefix + "a", prefix + "b"
    no_dad = (("net/ipv6/conf/all/accept_dad", "0"), ("net/ipv6/conf/default/accept_dad", "0"))

    def side(name: str, host: int, link: Link) -> Namespace:
        return Namespace(name, (Link("lo", Existing()), link), owned=True, sysctls=no_dad)

    addrs = {
        k: (ipaddress.ip_interface(f"fd00:9::{k}/64"), ipaddress.ip_interface(f"10.99.0.{k}/24"))
        for k in (1, 2)
    }
    spec = NetworkSpec(
        "vgtest",
        (
            side(a, 1, Link("eth0", Veth("eth0", b), addresses=addrs[1])),
            side(b, 2, Link("eth0", VethPeer(of="eth0"), addresses=addrs[2])),
        ),
        namespace_prefix=prefix,
    )
    with RealKernel() as kernel:
        try:
            apply(kernel, spec)
            yield a, b
        finally:
            remove_spec(kernel, spec)


SEND = 0.3  # seconds for a datagram to cross the veth


def _receiver(ns: str, family: int) -> socket.socket:
    with netns(ns):
        s = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 4789))  # noqa: S104 - inside a test namespace
    s.setblocking(False)
    return s


def _send(ns: str, src: str, dst: str, vni: int, size: int = 64, port: int = 4789) -> None:
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with netns(ns):
        s = socket.socket(family, socket.SOCK_DGRAM)
    with s:
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, 78, 1)  # IPV6_FREEBIND: a forged source
        else:
            s.setsockopt(socket.IPPROTO_IP, 15, 1)  # IP_FREEBIND
        s.bind((src, 0))
        vxlan = bytes([0x08, 0, 0, 0]) + vni.to_bytes(3, "big") + b"\x00"
        s.sendto(vxlan + bytes(size), (dst, port))


def _received(s: socket.socket) -> int:
    time.sleep(SEND)
    n = 0
    while True:
        try:
            s.recv(65535)
        except BlockingIOError:
            return n
        n += 1


@pytest.mark.root
def test_guard_binds_vni_to_source_and_refuses_fragments(pair: tuple[str, str]) -> None:
    from cjb.common.vxlan_guard import VxlanGuard, attach

    a, b = pair
    guard = VxlanGuard()
    guard.configure(
        4789, {7: ipaddress.ip_address("fd00:9::1"), 8: ipaddress.ip_address("10.99.0.1")}
    )
    with RealKernel() as kernel:
        assert attach(kernel, b, ["eth0"], guard.program("trusted"))
        assert attach(kernel, b, ["eth0"], guard.program("trusted")) == []  # idempotent
    v6, v4 = _receiver(b, socket.AF_INET6), _receiver(b, socket.AF_INET)
    try:
        _send(a, "fd00:9::1", "fd00:9::2", 7)  # bound: passes
        assert _received(v6) == 1
        _send(a, "fd00:9::99", "fd00:9::2", 7)  # forged source for VNI 7
        _send(a, "fd00:9::1", "fd00:9::2", 9)  # a VNI nobody holds
        _send(a, "fd00:9::1", "fd00:9::2", 7, size=3000)  # fragmented (RFC 7348 §4.3)
        assert _received(v6) == 0
        _send(a, "10.99.0.1", "10.99.0.2", 8)  # bound over IPv4
        assert _received(v4) == 1
        _send(a, "10.99.0.1", "10.99.0.2", 7)  # VNI 7 belongs to an IPv6 source
        assert _received(v4) == 0
        counts = guard.counters()
        assert counts == {
            "bound": 2, "unknown_vni": 1, "spoofed": 2, "from_underlay": 0, "fragment": 1,
        }, counts  # fmt: skip
        assert guard.spoofed() == {7: 2, 8: 0}
        # Rebinding: VNI 8 leaves the map (then unknown), VNI 7 moves to another source.
        guard.configure(4789, {7: ipaddress.ip_address("fd00:9::99")})
        assert set(guard.bindings()) == {7} and guard.spoofed() == {7: 2}  # counts carry on
        _send(a, "fd00:9::99", "fd00:9::2", 7)
        assert _received(v6) == 1
    finally:
        v6.close()
        v4.close()
        guard.close()


@pytest.mark.root
def test_wan_role_drops_all_vxlan_and_nothing_else(pair: tuple[str, str]) -> None:
    from cjb.common.vxlan_guard import VxlanGuard, attach

    a, b = pair
    guard = VxlanGuard()
    guard.configure(4789, {7: ipaddress.ip_address("fd00:9::1")})
    with RealKernel() as kernel:
        attach(kernel, b, ["eth0"], guard.program("wan"))
    v6 = _receiver(b, socket.AF_INET6)
    with netns(b):
        other = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    other.bind(("::", 4790))
    other.setblocking(False)
    try:
        _send(a, "fd00:9::1", "fd00:9::2", 7)  # even the bound source: not from the underlay
        assert _received(v6) == 0
        _send(a, "fd00:9::1", "fd00:9::2", 7, port=4790)  # another port is not VXLAN
        assert _received(other) == 1
        assert guard.counters()["from_underlay"] == 1
    finally:
        v6.close()
        other.close()
        guard.close()
    # The program outlives its loader: the binding holds without the process.
    v6 = _receiver(b, socket.AF_INET6)
    try:
        _send(a, "fd00:9::1", "fd00:9::2", 7)
        assert _received(v6) == 0
    finally:
        v6.close()


def test_drops_show_in_metrics_and_status(tmp_path: Path) -> None:
    import json

    from cjb.gateway.dataplane.metrics import StatusFileCollector
    from cjb.gateway.dataplane.status import render

    status = {
        "pid": 1, "updated": time.time(), "tenants": {},
        "host_input": {"input_dropped": 4, "vxlan_outside_tunnel": 30, "unknown_vni": 0},
        "vxlan_guard": {"active": True, "drops": {"bound": 9, "from_underlay": 30, "spoofed": 2}},
    }  # fmt: skip
    path = tmp_path / "status.json"
    path.write_text(json.dumps(status))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in StatusFileCollector(path).collect()
        for s in metric.samples
    }
    assert samples[("cjb_host_input_drops_total", (("reason", "vxlan_outside_tunnel"),))] == 30
    assert samples[("cjb_vxlan_guard_packets_total", (("verdict", "from_underlay"),))] == 30
    assert samples[("cjb_vxlan_guard_active", ())] == 1
    text = render(status, path)
    assert "VXLAN from outside the tunnel: 30" in text
    assert "VXLAN guard (tc): bound 9, dropped: from underlay 30, spoofed 2" in text
    status["vxlan_guard"] = {"active": False, "error": "no libbpf"}
    assert "VXLAN guard (tc): INACTIVE (no libbpf)" in render(status, path)
