"""When the translator sends an ICMP error itself, and what that error must look like.

The translator answers some packets it cannot forward with an ICMP error of its own
(RFC 7915 §4.1: source route failed, fragmentation needed; §5.1: packet too big,
parameter problem). These vectors hold the rules around those errors that hand-breaking
the code showed no other test noticed: the ICMPv6 checksum covers the pseudo-header,
no error is sent about a non-initial fragment or about an ICMP error (RFC 1122 §3.2.2,
RFC 4443 §2.4(e)), a tiny first fragment is dropped (RFC 1858), and a quoted IPv4
header keeps its DF bit.
"""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_LSRR
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, IPv6ExtHdrRouting
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from xlat_frames import (
    LAN_IP,
    LAN_IP6,
    SVC_IP,
    SVC_IP6,
    TO_LAN,
    TO_SERVICE,
    drop_only,
    error_back,
    icmp4_raw,
    icmp6_raw,
    ip4,
    ip6,
    lan_frame,
    ones_complement_sum,
    only,
    pseudo_v6,
    residue,
    run,
    svc_frame,
)

from cjb.gateway.xlat import DropReason, Side, XlatConfig

OWN_V6 = "fe80::a9fe:1"  # XlatConfig's default icmp_source_v6


def _routing_header_packet():
    return ip6() / IPv6ExtHdrRouting(addresses=[SVC_IP6], segleft=1) / UDP() / Raw(b"x")


def _too_big_for_lan():
    return ip6() / UDP(sport=1, dport=2) / Raw(bytes(1400 - 28))


# ------------------------------------------------ RFC 4443 §2.3: the pseudo-header


@pytest.mark.parametrize(
    ("make", "cfg", "reason", "icmp_type"),
    [
        (_too_big_for_lan, XlatConfig(lan_mtu=1300), DropReason.TOO_BIG, 2),
        (_routing_header_packet, XlatConfig(), DropReason.ROUTING_HEADER, 4),
    ],
    ids=["packet-too-big", "parameter-problem"],
)
def test_rfc4443_2_3_own_icmpv6_errors_checksum_covers_pseudo_header(
    make, cfg: XlatConfig, reason: DropReason, icmp_type: int
) -> None:
    """RFC 4443 §2.3: the ICMPv6 checksum includes the IPv6 pseudo-header (source =
    the translator's own address, destination = the offending packet's sender)."""
    err = Ether(error_back(run(svc_frame(make()), TO_LAN, cfg), reason, Side.SERVICE))
    v6 = err[IPv6]
    assert (v6.src, v6.dst, v6.nh) == (OWN_V6, SVC_IP6, 58)
    msg = bytes(v6.payload)
    assert msg[0] == icmp_type and len(msg) == v6.plen
    assert residue(pseudo_v6(OWN_V6, SVC_IP6, 58, len(msg)) + msg) == 0
    # ... and a checksum over the message alone (the ICMPv4 rule) would not verify
    assert residue(msg) != 0 or ones_complement_sum(pseudo_v6(OWN_V6, SVC_IP6, 58, len(msg))) == 0


# ------------------------------------------------ RFC 1122 §3.2.2: when not to answer


def test_rfc1122_3_2_2_no_source_route_error_about_a_non_initial_fragment() -> None:
    """LSRR is copied into every fragment (RFC 791, copy flag set); an error about a
    non-initial fragment is forbidden (RFC 1122 §3.2.2), so it is dropped silently."""
    pkt = ip4(options=[IPOption_LSRR(routers=["192.168.0.1"])], frag=10, flags="MF", proto=17)
    result = run(lan_frame(pkt / Raw(bytes(64))), TO_SERVICE)
    assert drop_only(result) is DropReason.SOURCE_ROUTE
    # the same option on the first fragment is answered (RFC 7915 §4.1)
    first = ip4(options=[IPOption_LSRR(routers=["192.168.0.1"])], flags="MF", proto=17)
    error_back(
        run(lan_frame(first / Raw(bytes(64))), TO_SERVICE), DropReason.SOURCE_ROUTE, Side.LAN
    )


def test_rfc1122_3_2_2_no_fragmentation_needed_about_a_non_initial_fragment() -> None:
    cfg = XlatConfig(service_mtu=1280)
    pkt = ip4(flags="DF+MF", frag=100, proto=17) / Raw(bytes(1300))
    assert drop_only(run(lan_frame(pkt), TO_SERVICE, cfg)) is DropReason.TOO_BIG


def _icmpv4_error_packet(**ip: object):
    quoted = bytes(IP(src=SVC_IP, dst=LAN_IP) / UDP(sport=53, dport=4000) / Raw(bytes(1300)))
    return ip4(proto=1, **ip) / Raw(icmp4_raw(3, 3, bytes(4), quoted))


def test_rfc1122_3_2_2_no_source_route_error_about_an_icmp_error() -> None:
    pkt = _icmpv4_error_packet(options=[IPOption_LSRR(routers=["192.168.0.1"])])
    assert drop_only(run(lan_frame(pkt), TO_SERVICE)) is DropReason.SOURCE_ROUTE
    # an echo request with the same option is answered: the rule is about errors only
    echo = ip4(options=[IPOption_LSRR(routers=["192.168.0.1"])]) / ICMP(type=8) / Raw(b"x")
    error_back(run(lan_frame(echo), TO_SERVICE), DropReason.SOURCE_ROUTE, Side.LAN)


def test_rfc1122_3_2_2_big_df_icmp_error_is_cut_not_answered() -> None:
    """An ICMPv4 error too big for the service link even with DF set gets no
    fragmentation-needed back (RFC 1122 §3.2.2): it is cut to the 1280 bytes RFC 4443
    §2.4(c) allows and translated, while an echo of the same size is refused."""
    cfg = XlatConfig(service_mtu=1280)
    pkt = _icmpv4_error_packet(flags="DF")
    assert len(bytes(pkt)) + 20 > 1280
    out = Ether(only(run(lan_frame(pkt), TO_SERVICE, cfg), Side.SERVICE))
    assert len(bytes(out[IPv6])) == 1280
    echo = ip4(flags="DF") / ICMP(type=8) / Raw(bytes(1300))
    error_back(run(lan_frame(echo), TO_SERVICE, cfg), DropReason.TOO_BIG, Side.LAN)


# ------------------------------------------------ RFC 4443 §2.4(e), RFC 7915 §5.1


def test_rfc4443_2_4_e_no_parameter_problem_about_a_non_initial_fragment() -> None:
    """A routing header sits in the unfragmentable part, so every fragment has it; only
    the first may be answered (RFC 7915 §5.1), a later one is dropped silently."""
    routing = IPv6ExtHdrRouting(addresses=[SVC_IP6], segleft=1)
    later = ip6() / routing / IPv6ExtHdrFragment(id=7, offset=20, m=1, nh=17) / Raw(bytes(64))
    assert drop_only(run(svc_frame(later), TO_LAN)) is DropReason.ROUTING_HEADER
    first = ip6() / routing / IPv6ExtHdrFragment(id=7, offset=0, m=1, nh=17) / Raw(bytes(64))
    error_back(run(svc_frame(first), TO_LAN), DropReason.ROUTING_HEADER, Side.SERVICE)


def test_rfc4443_2_4_e1_no_error_about_an_icmpv6_error() -> None:
    quoted = bytes(IPv6(src=LAN_IP6, dst=SVC_IP6) / UDP(sport=1, dport=2) / Raw(b"q"))
    msg = icmp6_raw(1, 4, bytes(4), quoted, SVC_IP6, LAN_IP6)
    routing = IPv6ExtHdrRouting(addresses=[SVC_IP6], segleft=1, nh=58)
    pkt = IPv6(src=SVC_IP6, dst=LAN_IP6, nh=43) / routing / Raw(msg)
    assert drop_only(run(svc_frame(pkt), TO_LAN)) is DropReason.ROUTING_HEADER


# ------------------------------------------------ RFC 1858: tiny fragments


@pytest.mark.parametrize("tcp_bytes", [8, 12, 17])
def test_rfc1858_tiny_first_ipv4_fragment_dropped(tcp_bytes: int) -> None:
    """A first fragment too short to hold the TCP header up to its checksum (and flags)
    is the tiny-fragment attack (RFC 1858 §3.1): dropped, not translated."""
    tcp = bytes(TCP(sport=40000, dport=80, flags="S"))[:tcp_bytes]
    pkt = ip4(flags="MF", proto=6, id=99) / Raw(tcp)
    assert drop_only(run(lan_frame(pkt), TO_SERVICE)) is DropReason.FRAGMENT_INVALID


def test_rfc1858_tiny_first_ipv6_fragment_dropped() -> None:
    tcp = bytes(TCP(sport=80, dport=40000, flags="SA"))[:8]
    pkt = ip6() / IPv6ExtHdrFragment(id=5, offset=0, m=1, nh=6) / Raw(tcp)
    assert drop_only(run(svc_frame(pkt), TO_LAN)) is DropReason.FRAGMENT_INVALID


def test_a_first_fragment_with_the_whole_tcp_header_is_translated() -> None:
    tcp = bytes(TCP(sport=40000, dport=80, flags="S") / Raw(bytes(40)))
    pkt = ip4(flags="MF", proto=6, id=99) / Raw(tcp[:24])
    only(run(lan_frame(pkt), TO_SERVICE), Side.SERVICE)


# ------------------------------------------------ the quoted header keeps DF


@pytest.mark.parametrize(("size", "df"), [(1300, True), (1000, False)])
def test_rfc7915_5_3_quoted_ipv4_header_keeps_df(size: int, df: bool) -> None:
    """RFC 7915 §5.3 translates the quoted packet like any packet, so its DF bit follows
    §5.1 (set above 1260 bytes): the LAN host must recognise the header it sent."""
    quoted = bytes(IPv6(src=LAN_IP6, dst=SVC_IP6) / UDP(sport=4000, dport=53) / bytes(size - 48))
    msg = icmp6_raw(2, 0, (1280).to_bytes(4, "big"), quoted[:1232], SVC_IP6, LAN_IP6)
    frame = svc_frame(IPv6(src=SVC_IP6, dst=LAN_IP6, nh=58) / Raw(msg))
    err = Ether(only(run(frame, TO_LAN), Side.LAN))
    inner = IP(bytes(err[ICMP].payload))
    assert inner.len == size - 20
    assert bool(inner.flags.DF) is df
    assert inner.frag == 0 and not inner.flags.MF
    raw = bytes(err[ICMP].payload)[:20]
    assert residue(raw) == 0  # the quoted header's own checksum, DF included
