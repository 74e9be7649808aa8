"""The WAN filter (nftables bridge family): the generated ruleset, and real frames through a
real bridge, counted with the table's own nft counters and captured on the far side.

Real topology (namespaces cjbBf<run>-{lan,br,wan}); tun0 stands in for the tunnel port:

    lan ns: l0 ──veth── lan0 ┐
                             br0 (br ns, table bridge cjb_wan)
    wan ns: w0 ──veth── tun0 ┘
"""

from __future__ import annotations

import ipaddress
import secrets
import struct
import time
from collections.abc import Iterator

import pytest

from cjb.appliance.wan_filter import COUNTERS, TABLE_FAMILY, TABLE_NAME, FilterSpec, filter_table
from cjb.common.packet.arp import OP_REQUEST, ArpPacket, build_arp
from cjb.common.packet.checksum import internet_checksum
from cjb.common.packet.ethernet import (
    BROADCAST_MAC,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    build_ethernet,
    ipv4_multicast_mac,
)

SERVICE = ipaddress.IPv4Address("192.168.0.100")
CLOUD_MAC = "02:cc:00:00:00:01"
CLIENT_MAC = bytes.fromhex("020000000010")


def spec(pps: int = 100, burst: int = 200) -> FilterSpec:
    return FilterSpec("tun0", SERVICE, (CLOUD_MAC,), group_pps=pps, group_burst=burst)


def test_ruleset_names_exactly_what_crosses() -> None:
    text = filter_table(spec()).script()
    for line in [
        "table bridge cjb_wan {",
        'oifname "tun0" jump to_wan',
        'iifname "tun0" counter name from_wan',
        "ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00 jump unicast",
        f"ether daddr {{ {CLOUD_MAC} }} counter name unicast_ok accept",
        f"ether type arp arp daddr ip {SERVICE} jump arp_limited",
        "ether type ip ip daddr 224.0.0.251 udp dport 5353 jump discovery_limited",
        "ether type ip6 ip6 daddr ff02::fb udp dport 5353 jump discovery_limited",
        "ether type ip ip daddr 239.255.255.250 udp dport 1900 jump discovery_limited",
        "ether type ip6 ip6 daddr ff02::c udp dport 1900 jump discovery_limited",
        "ether type ip ip daddr 224.0.0.252 udp dport 5355 jump discovery_limited",
        "ether type ip6 ip6 daddr ff02::1:3 udp dport 5355 jump discovery_limited",
        "limit rate 100/second burst 200 packets counter name arp_ok accept",
        "counter name group_limited drop",
        "counter name lan_only drop",
    ]:
        assert line in text, line
    for name in COUNTERS:
        assert f"counter {name} {{ packets 0 bytes 0 }}" in text


def test_counters_carry_over_and_options_switch_rules_off() -> None:
    text = filter_table(FilterSpec("tun0", SERVICE, (), ndp=False), {"arp_ok": (7, 420)}).script()
    assert "counter arp_ok { packets 7 bytes 420 }" in text
    assert "ether daddr {" not in text  # no cloud MACs: no empty set (a syntax error)
    # ...and unicast is left to the bridge's forwarding database.
    assert "\tchain unicast {\n\t\tcounter name unicast_ok accept\n\t}" in text
    assert "nd-neighbor-solicit" not in text


# -- real: a bridge in namespaces ---------------------------------------------------------


def arp_request(target: str) -> bytes:
    arp = ArpPacket(
        OP_REQUEST,
        CLIENT_MAC,
        ipaddress.IPv4Address("192.168.0.10").packed,
        b"\x00" * 6,
        ipaddress.IPv4Address(target).packed,
    )
    return build_ethernet(BROADCAST_MAC, CLIENT_MAC, ETHERTYPE_ARP) + build_arp(arp)


def udp_frame(
    dst_mac: bytes, dst_ip: str, port: int, payload: bytes, src_mac: bytes = CLIENT_MAC
) -> bytes:
    """IPv4/UDP, UDP checksum 0 (allowed for IPv4, RFC 768); the IPv4 header checksum must be
    right: br_netfilter, when loaded, drops bridged IPv4 with a bad one."""
    src = ipaddress.IPv4Address("192.168.0.10").packed
    dst = ipaddress.IPv4Address(dst_ip).packed
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 1, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", internet_checksum(ip)) + ip[12:]
    return build_ethernet(dst_mac, src_mac, ETHERTYPE_IPV4) + ip + udp


@pytest.fixture
def bridge_lab() -> Iterator[tuple[str, str, str]]:
    import tests.labkit as labkit

    labkit.require("nft", "ip")
    from cjb.common.netlink import (
        Bridge,
        Link,
        Namespace,
        NetworkSpec,
        Veth,
        VethPeer,
        apply,
        remove,
    )
    from cjb.common.netlink.real import RealKernel

    prefix = f"cjbBf{secrets.token_hex(2)}-"
    lan, br, wan = prefix + "lan", prefix + "br", prefix + "wan"
    off = (("ipv6.disable_ipv6", "1"),)  # no kernel NDP/MLD noise in the counters
    net = NetworkSpec(
        owner=f"test-wanfilter-{prefix}",
        namespace_prefix=prefix,
        namespaces=(
            Namespace(lan, (Link("l0", VethPeer(of="lan0"), sysctls=off),), owned=True),
            Namespace(
                br,
                (
                    Link("br0", Bridge(), sysctls=off),
                    Link("lan0", Veth(peer="l0", peer_netns=lan), master="br0", sysctls=off),
                    Link("tun0", Veth(peer="w0", peer_netns=wan), master="br0", sysctls=off),
                ),
                owned=True,
            ),
            Namespace(wan, (Link("w0", VethPeer(of="tun0"), sysctls=off),), owned=True),
        ),
    )
    with RealKernel() as kernel:
        try:
            apply(kernel, net)
            yield lan, br, wan
        finally:
            remove(kernel, net)
            assert not [n for n in kernel.namespaces() if n.startswith(prefix)]


def _delivered(frames: list[bytes], marker: bytes) -> int:
    return sum(1 for f in frames if marker in f)


@pytest.mark.root
def test_real_bridge_lets_through_only_what_the_cloud_needs(
    bridge_lab: tuple[str, str, str],
) -> None:
    import tests.labkit as labkit
    from cjb.common.netlink import nft

    lan, br, wan = bridge_lab
    nft.apply_table(br, filter_table(spec(pps=50, burst=50)))
    cap = labkit.Capture(wan, ["w0"])
    cloud = bytes.fromhex(CLOUD_MAC.replace(":", ""))
    mdns_mac = ipv4_multicast_mac(ipaddress.IPv4Address("224.0.0.251").packed)
    other_mac = ipv4_multicast_mac(ipaddress.IPv4Address("239.1.2.3").packed)
    try:
        labkit.send_frames(
            lan,
            "l0",
            [
                arp_request("192.168.0.100"),  # crosses: ARP for the service address
                arp_request("192.168.0.20"),  # stays: ARP for a LAN host
                udp_frame(cloud, "192.168.0.100", 80, b"to-cloud"),  # crosses: cloud MAC
                udp_frame(bytes.fromhex("020000000020"), "192.168.0.20", 80, b"to-lan-host"),
                udp_frame(mdns_mac, "224.0.0.251", 5353, b"mdns-query"),  # crosses: mDNS
                udp_frame(other_mac, "239.1.2.3", 5000, b"other-group"),  # stays
            ],
        )
        time.sleep(0.3)
        got = cap.drain()["w0"]
        assert _delivered(got, ipaddress.IPv4Address("192.168.0.100").packed) >= 2
        assert _delivered(got, b"to-cloud") == 1
        assert _delivered(got, b"mdns-query") == 1
        assert _delivered(got, b"to-lan-host") == 0
        assert _delivered(got, b"other-group") == 0
        assert not any(f.endswith(ipaddress.IPv4Address("192.168.0.20").packed) for f in got)
        counts = {k: v[0] for k, v in nft.counters(br, TABLE_FAMILY, TABLE_NAME).items()}
        assert counts["arp_ok"] == 1 and counts["unicast_ok"] == 1
        assert counts["discovery_ok"] == 1
        assert counts["lan_only"] == 3 and counts["group_limited"] == 0

        # A storm of 3000 ARP broadcasts for the service address: at most the configured
        # rate (50/s, burst 50) reaches the WAN; the rest is counted as limited.
        storm = [arp_request("192.168.0.100")] * 3000
        started = time.monotonic()
        labkit.send_frames(lan, "l0", storm)
        elapsed = time.monotonic() - started
        time.sleep(0.3)
        passed = sum(1 for f in cap.drain()["w0"] if f.startswith(storm[0]))
        after = {k: v[0] for k, v in nft.counters(br, TABLE_FAMILY, TABLE_NAME).items()}
        limited = after["group_limited"]
        allowed = after["arp_ok"] - counts["arp_ok"]
        assert allowed + limited == 3000
        assert passed == allowed
        assert allowed <= 50 + 50 + 50 * (elapsed + 0.5), (allowed, elapsed)
        assert limited >= 2800

        # Frames from the tunnel side are counted, not filtered.
        labkit.send_frames(wan, "w0", [udp_frame(CLIENT_MAC, "192.168.0.10", 9, b"back", cloud)])
        time.sleep(0.1)
        final = {k: v[0] for k, v in nft.counters(br, TABLE_FAMILY, TABLE_NAME).items()}
        assert final["from_wan"] == 1
    finally:
        cap.close()


def _chains(script: str) -> dict[str, list[str]]:
    """Each chain's rules in order, so a test can speak of one chain, not of a substring that
    may stand in several."""
    chains: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in script.splitlines():
        line = raw.strip()
        if line.startswith("chain ") and line.endswith("{"):
            current = chains.setdefault(line.split()[1], [])
        elif line == "}":
            current = None
        elif current is not None and line and not line.startswith("type filter"):
            current.append(line)
    return chains


def test_unicast_not_for_the_cloud_is_dropped_and_counted() -> None:
    """The unicast chain admits only the cloud's MACs and the service address, then drops:
    a LAN's unicast to anyone else never crosses the WAN (the last rule is the verdict)."""
    chains = _chains(filter_table(spec()).script())
    unicast = chains["unicast"]
    assert unicast[-1] == "counter name lan_only drop", unicast
    assert all(rule.endswith("accept") for rule in unicast[:-1]), unicast
    assert unicast[0] == f"ether daddr {{ {CLOUD_MAC} }} counter name unicast_ok accept"
    # Every chain a frame can end in has a verdict for what it did not admit.
    for name in ("group", "arp_limited", "discovery_limited", "ndp_limited"):
        assert chains[name][-1].endswith("drop"), (name, chains[name])
    assert chains["to_wan"] == [
        "ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00 jump unicast",
        "jump group",
    ]
