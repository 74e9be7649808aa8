"""RFC 7915 vectors for the frame translator: IP headers, addresses, options, extension
headers, fragments, DF / path MTU and UDP zero checksums (ICMP is in test_xlat_rfc_icmp.py,
ARP <-> NDP and multicast in test_xlat_rfc_ndp.py).

Each vector names the RFC section it comes from. Frames are built and dissected with
scapy, independently of cjb's codecs. Deliberate CJB differences
(docs/decisions/0002-no-ttl-decrement.md): TTL / hop limit copied, not decremented; MACs
preserved; fe80::/96 is the address mapping.
"""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_LSRR, IPOption_SSRR
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    PadN,
)
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from xlat_frames import (
    LAN_IP,
    LAN_IP6,
    LAN_MAC,
    NO_IP,
    SVC_IP,
    SVC_IP6,
    SVC_MAC,
    TO_LAN,
    TO_SERVICE,
    TRANSLATOR_MAC,
    assert_checksums,
    drop_only,
    error_back,
    ip4,
    ip6,
    l4_residue_v4,
    l4_residue_v6,
    lan_frame,
    ones_complement_sum,
    only,
    pseudo_v4,
    residue,
    run,
    svc_frame,
)

from cjb.gateway.xlat import DropReason, Side, UdpZeroChecksum, XlatConfig

PAYLOAD = bytes(range(200))


def _l4(kind: str):
    if kind == "tcp":
        return TCP(sport=40000, dport=80, seq=1, ack=2, flags="PA") / Raw(PAYLOAD)
    if kind == "udp":
        return UDP(sport=5353, dport=9999) / Raw(PAYLOAD)
    return ICMP(type=8, id=7, seq=9) / Raw(PAYLOAD)


_NH = {"tcp": 6, "udp": 17, "icmp": 58}
_PROTO4 = {"tcp": 6, "udp": 17, "icmp": 1}


# ------------------------------------------------------------ §4.1 IPv4 -> IPv6 header


@pytest.mark.parametrize("kind", ["tcp", "udp", "icmp"])
@pytest.mark.parametrize(("tos", "ttl"), [(0, 64), (0xB8, 1), (0x03, 255), (0xFF, 128)])
def test_rfc7915_4_1_ipv4_header_to_ipv6(kind: str, tos: int, ttl: int) -> None:
    pkt = ip4(tos=tos, ttl=ttl, id=0x1234) / _l4(kind)
    out = Ether(only(run(lan_frame(pkt), TO_SERVICE), Side.SERVICE))
    v6 = out[IPv6]
    # MACs preserved end to end; EtherType IPv6
    assert (out.dst, out.src, out.type) == (SVC_MAC, LAN_MAC, 0x86DD)
    assert v6.version == 6
    assert v6.tc == tos  # §4.1 Traffic Class: copied from TOS by default
    assert v6.fl == 0  # §4.1 Flow Label: 0
    assert v6.plen == len(bytes(pkt)) - 20  # §4.1 Payload Length: total - IPv4 header
    assert v6.nh == _NH[kind]  # §4.1 Next Header: protocol, 1 -> 58
    assert v6.hlim == ttl  # docs/decisions/0002-no-ttl-decrement.md: copied, not decremented
    assert (v6.src, v6.dst) == (LAN_IP6, SVC_IP6)  # fe80::/96 rule
    assert_checksums(bytes(out))
    assert bytes(v6.payload)[18:] == bytes(pkt[IP].payload)[18:]  # data unchanged


@pytest.mark.parametrize("kind", ["tcp", "udp", "icmp"])
@pytest.mark.parametrize(("tc", "hlim"), [(0, 64), (0xB8, 1), (0x03, 255)])
def test_rfc7915_5_1_ipv6_header_to_ipv4(kind: str, tc: int, hlim: int) -> None:
    l4 = _l4(kind) if kind != "icmp" else ICMPv6EchoRequest(id=7, seq=9, data=PAYLOAD)
    pkt = IPv6(bytes(ip6(tc=tc, hlim=hlim, fl=0x12345) / l4))
    out = Ether(only(run(svc_frame(pkt), TO_LAN, first_ipv4_id=0x0777), Side.LAN))
    v4 = out[IP]
    assert (out.dst, out.src, out.type) == (LAN_MAC, SVC_MAC, 0x0800)
    assert v4.version == 4 and v4.ihl == 5  # §5.1: no options
    assert v4.tos == tc  # §5.1 TOS: copied from traffic class
    assert v4.len == pkt[IPv6].plen + 20  # §5.1 Total Length
    assert v4.proto == _PROTO4[kind]  # §5.1 Protocol, 58 -> 1
    assert v4.ttl == hlim  # docs/decisions/0002-no-ttl-decrement.md
    assert v4.flags == 0 and v4.frag == 0  # §5.1: <= 1260 bytes -> DF=0
    assert v4.id == 0x0777  # §5.1 / RFC 6864: DF=0 needs a generated ID
    assert (v4.src, v4.dst) == (SVC_IP, LAN_IP)
    assert_checksums(bytes(out))


def test_rfc7915_5_1_ids_differ_between_df0_packets() -> None:
    """RFC 6864 §4.2 via RFC 7915 §5.1: consecutive DF=0 packets get distinct IDs."""
    from cjb.gateway.xlat import Translator

    translator = Translator(first_ipv4_id=0xFFFF)
    frame = svc_frame(ip6() / UDP(sport=1, dport=2) / Raw(b"x"))
    ids = [Ether(translator.translate(frame, TO_LAN).emits[0].frame)[IP].id for _ in range(3)]
    assert len(set(ids)) == 3


# ------------------------------------------------------------ addresses (fe80::/96)


def test_address_mapping_both_ways() -> None:
    out = Ether(only(run(lan_frame(ip4() / UDP()), TO_SERVICE), Side.SERVICE))
    assert (out[IPv6].src, out[IPv6].dst) == ("fe80::c0a8:a", "fe80::c0a8:64")
    back = Ether(only(run(svc_frame(ip6() / UDP()), TO_LAN), Side.LAN))
    assert (back[IP].src, back[IP].dst) == ("192.168.0.100", "192.168.0.10")


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("fe80::1", LAN_IP6),  # link-local, not /96 form
        (SVC_IP6, "fe80::1:c0a8:a"),  # bits 96..111 not zero
        ("2001:db8::c0a8:64", LAN_IP6),  # global
        (SVC_IP6, "::ffff:192.168.0.10"),  # IPv4-mapped
        ("64:ff9b::c0a8:64", LAN_IP6),  # RFC 6052 well-known prefix: not ours
        (SVC_IP6, "fe80::7f00:1"),  # embeds loopback
        ("fe80::", LAN_IP6),  # embeds 0.0.0.0
    ],
)
def test_non_fe80_96_ipv6_is_not_translatable(src: str, dst: str) -> None:
    frame = svc_frame(IPv6(src=src, dst=dst) / UDP())
    assert drop_only(run(frame, TO_LAN)) is DropReason.ADDRESS_NOT_TRANSLATABLE


@pytest.mark.parametrize(
    ("src", "dst", "eth_dst", "reason"),
    [
        (NO_IP, SVC_IP, SVC_MAC, DropReason.ADDRESS_NOT_TRANSLATABLE),
        ("127.0.0.1", SVC_IP, SVC_MAC, DropReason.ADDRESS_NOT_TRANSLATABLE),
        (LAN_IP, "127.0.0.1", SVC_MAC, DropReason.ADDRESS_NOT_TRANSLATABLE),
        (LAN_IP, "240.0.0.1", SVC_MAC, DropReason.ADDRESS_NOT_TRANSLATABLE),
        (LAN_IP, "255.255.255.255", "ff:ff:ff:ff:ff:ff", DropReason.BROADCAST),
        (LAN_IP, "192.168.0.255", "ff:ff:ff:ff:ff:ff", DropReason.BROADCAST),
    ],
)
def test_untranslatable_ipv4(src: str, dst: str, eth_dst: str, reason: DropReason) -> None:
    frame = lan_frame(IP(src=src, dst=dst) / UDP(), dst=eth_dst)
    assert drop_only(run(frame, TO_SERVICE)) is reason


def test_wrong_side_frames() -> None:
    assert drop_only(run(lan_frame(ip6() / UDP()), TO_SERVICE)) is DropReason.NATIVE_IPV6_ON_LAN
    assert drop_only(run(svc_frame(ip4() / UDP()), TO_LAN)) is DropReason.IPV4_ON_SERVICE


# ------------------------------------------------------------ §4.1 IPv4 options


@pytest.mark.parametrize(
    "options",
    [
        b"\x01\x01\x01\x00",  # NOP NOP NOP EOL
        b"\x07\x07\x04" + bytes(4) + b"\x00",  # record route (RFC 791)
        b"\x44\x0c\x05\x00" + bytes(8),  # timestamp
        b"\x83\x07\x08\xc0\xa8\x00\x01\x00",  # LSRR, pointer 8 > length 7: expired
    ],
    ids=["nop-eol", "record-route", "timestamp", "expired-lsrr"],
)
def test_rfc7915_4_1_ipv4_options_are_ignored(options: bytes) -> None:
    pkt = IP(bytes(ip4(options=[Raw(options)]) / UDP(sport=1, dport=2) / Raw(b"hello")))
    assert pkt.ihl * 4 == 20 + len(options)
    out = Ether(only(run(lan_frame(pkt), TO_SERVICE), Side.SERVICE))
    assert out[IPv6].plen == 8 + 5 and out[IPv6].nh == 17
    assert bytes(out[UDP].payload) == b"hello"
    assert_checksums(bytes(out))


@pytest.mark.parametrize(
    "option",
    [IPOption_LSRR(routers=["192.168.0.1"]), IPOption_SSRR(routers=["192.168.0.1", "10.0.0.1"])],
    ids=["lsrr", "ssrr"],
)
def test_rfc7915_4_1_unexpired_source_route_sends_icmp_back(option: object) -> None:
    pkt = ip4(options=[option]) / UDP(sport=1, dport=2) / Raw(b"x" * 30)
    err = Ether(error_back(run(lan_frame(pkt), TO_SERVICE), DropReason.SOURCE_ROUTE, Side.LAN))
    assert (err.dst, err.src) == (LAN_MAC, TRANSLATOR_MAC)
    assert err[IP].src == "169.254.0.1" and err[IP].dst == LAN_IP
    assert (err[ICMP].type, err[ICMP].code) == (3, 5)  # source route failed
    assert bytes(err[ICMP].payload).startswith(bytes(pkt)[:28])  # the offending header
    assert len(bytes(err[IP])) <= 576  # RFC 1812 §4.3.2.3
    assert_checksums(bytes(err))


# ------------------------------------------------------------ §5.1 extension headers

_EXT_CHAINS = {
    "hbh": IPv6ExtHdrHopByHop(),
    "dest-opts": IPv6ExtHdrDestOpt(),
    "routing-sl0": IPv6ExtHdrRouting(addresses=["fe80::c0a8:1"], segleft=0),
    "hbh+dest+routing-sl0": IPv6ExtHdrHopByHop()
    / IPv6ExtHdrDestOpt()
    / IPv6ExtHdrRouting(addresses=["fe80::c0a8:1"], segleft=0),
}


@pytest.mark.parametrize("chain", list(_EXT_CHAINS), ids=list(_EXT_CHAINS))
@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_rfc7915_5_1_extension_headers_skipped(chain: str, kind: str) -> None:
    pkt = ip6() / _EXT_CHAINS[chain].copy() / _l4(kind)
    out = Ether(only(run(svc_frame(pkt), TO_LAN), Side.LAN))
    seg = bytes(pkt[TCP if kind == "tcp" else UDP])
    assert out[IP].proto == _PROTO4[kind]
    assert out[IP].len == 20 + len(seg)  # extension headers are not counted
    assert bytes(out[IP].payload)[18:] == seg[18:]
    assert_checksums(bytes(out))


@pytest.mark.parametrize(
    ("prefix", "offset"),
    [
        ([], 40 + 3),
        ([IPv6ExtHdrHopByHop()], 48 + 3),
        ([IPv6ExtHdrDestOpt(options=[PadN(optdata=bytes(12))])], 56 + 3),
    ],
    ids=["routing-first", "after-hbh", "after-16-byte-destopts"],
)
def test_rfc7915_5_1_routing_header_segments_left_sends_parameter_problem(
    prefix: list, offset: int
) -> None:
    layers = ip6()
    for ext in prefix:
        layers = layers / ext
    pkt = layers / IPv6ExtHdrRouting(addresses=[SVC_IP6], segleft=1) / UDP() / Raw(b"x")
    err = Ether(error_back(run(svc_frame(pkt), TO_LAN), DropReason.ROUTING_HEADER, Side.SERVICE))
    assert (err.dst, err.src) == (SVC_MAC, TRANSLATOR_MAC)
    assert err[IPv6].dst == SVC_IP6 and err[IPv6].src == "fe80::a9fe:1"
    raw = bytes(err[IPv6].payload)
    assert raw[0:2] == b"\x04\x00"  # parameter problem, erroneous header field
    assert int.from_bytes(raw[4:8], "big") == offset  # pointer at Segments Left
    assert raw[8:].startswith(bytes(pkt)[: offset + 1])
    assert bytes(pkt)[offset] == 1
    assert_checksums(bytes(err))


def test_rfc4443_2_4_no_parameter_problem_for_multicast_destination() -> None:
    """RFC 4443 §2.4 (e.3): no error (other than PTB / param problem code 2) in response to
    a packet sent to a multicast address; the routing-header rule of RFC 7915 §5.1 is a
    SHOULD subject to it."""
    pkt = ip6(dst="ff02::fb") / IPv6ExtHdrRouting(addresses=[SVC_IP6], segleft=1) / UDP()
    result = run(svc_frame(pkt, dst="33:33:00:00:00:fb"), TO_LAN)
    assert result.drop is DropReason.ROUTING_HEADER
    assert result.emits == ()


def test_rfc1122_3_2_2_no_source_route_error_for_multicast_destination() -> None:
    """RFC 1122 §3.2.2: an ICMP error MUST NOT be sent about a datagram to a multicast
    address; the source-route rule of RFC 7915 §4.1 is a SHOULD subject to it."""
    pkt = ip4(dst="224.0.0.251", options=[IPOption_LSRR(routers=["192.168.0.1"])]) / UDP()
    result = run(lan_frame(pkt, dst="01:00:5e:00:00:fb"), TO_SERVICE)
    assert result.drop is DropReason.SOURCE_ROUTE
    assert result.emits == ()


# ------------------------------------------------------------ fragments


@pytest.mark.parametrize(
    ("ident", "frag", "mf", "kind"),
    [(0xABCD, 0, True, "tcp"), (0x0001, 185, False, "udp"), (0xFFFF, 1000, True, "udp")],
)
def test_rfc7915_4_1_ipv4_fragment_gets_fragment_header(
    ident: int, frag: int, mf: bool, kind: str
) -> None:
    payload = bytes(_l4(kind))[:200] if frag == 0 else PAYLOAD[:104]
    pkt = ip4(id=ident, frag=frag, flags="MF" if mf else 0, proto=_PROTO4[kind]) / Raw(payload)
    out = Ether(only(run(lan_frame(pkt), TO_SERVICE), Side.SERVICE))
    fh = out[IPv6ExtHdrFragment]
    assert out[IPv6].nh == 44
    assert out[IPv6].plen == 8 + len(payload)
    assert fh.nh == _PROTO4[kind]
    assert fh.id == ident  # 32-bit ID = IPv4 ID (high 16 bits zero)
    assert fh.offset == frag and fh.m == int(mf)
    if frag:
        assert bytes(fh.payload) == payload
    else:  # first fragment: transport checksum adjusted for the new pseudo-header
        assert bytes(fh.payload)[18:] == payload[18:]


@pytest.mark.parametrize(
    ("ident", "offset", "m"), [(0x12345678, 0, 1), (0xDEAD0001, 100, 1), (0x0000FFFF, 7, 0)]
)
def test_rfc7915_5_1_1_ipv6_fragment_to_ipv4_fragment(ident: int, offset: int, m: int) -> None:
    whole = bytes(ip6() / UDP(sport=1, dport=2) / Raw(PAYLOAD[:96]))[40:]
    body = whole if offset == 0 else PAYLOAD[:96]
    pkt = ip6(hlim=33) / IPv6ExtHdrFragment(id=ident, offset=offset, m=m, nh=17) / Raw(body)
    out = Ether(only(run(svc_frame(pkt), TO_LAN), Side.LAN))
    v4 = out[IP]
    assert v4.id == ident & 0xFFFF  # low-order 16 bits
    assert v4.frag == offset and bool(v4.flags.MF) == bool(m)
    assert not v4.flags.DF  # DF cleared, may be fragmented further
    assert v4.proto == 17 and v4.ttl == 33
    assert v4.len == 20 + len(body)
    if offset:
        assert bytes(v4.payload) == body


def test_rfc7915_4_1_df_set_and_too_big_sends_fragmentation_needed() -> None:
    cfg = XlatConfig(lan_mtu=1500, service_mtu=1400)
    pkt = ip4(flags="DF") / UDP(sport=1, dport=2) / Raw(bytes(1400 - 28))
    assert len(bytes(pkt)) == 1400
    err = Ether(error_back(run(lan_frame(pkt), TO_SERVICE, cfg), DropReason.TOO_BIG, Side.LAN))
    assert (err[ICMP].type, err[ICMP].code) == (3, 4)
    assert err[ICMP].nexthopmtu == 1400 - 20  # service MTU minus the header growth
    assert err[IP].dst == LAN_IP and err.dst == LAN_MAC
    assert len(bytes(err[IP])) <= 576
    assert bytes(err[ICMP].payload).startswith(bytes(pkt)[:28])
    assert_checksums(bytes(err))


def test_df_set_fits_service_mtu_default() -> None:
    """Service MTU = LAN MTU + 20 (docs/decisions/0003-service-mtu.md), so a full-size DF
    packet is never refused."""
    pkt = ip4(flags="DF") / UDP(sport=1, dport=2) / Raw(bytes(1500 - 28))
    out = Ether(only(run(lan_frame(pkt), TO_SERVICE), Side.SERVICE))
    assert len(bytes(out[IPv6])) == 1520 and IPv6ExtHdrFragment not in out


@pytest.mark.parametrize("limit", [1280, 1400])
@pytest.mark.parametrize("kind", ["udp", "tcp", "icmp"])
def test_rfc7915_4_1_df_clear_larger_than_lowest_ipv6_mtu_is_fragmented(
    limit: int, kind: str
) -> None:
    cfg = XlatConfig(lowest_ipv6_mtu=limit)
    pkt = IP(bytes(ip4(id=0x5A5A) / _sized(kind, 1500 - 20)))
    assert pkt.len == 1500 and not pkt.flags.DF
    result = run(lan_frame(pkt), TO_SERVICE, cfg)
    assert result.drop is None and len(result.emits) >= 2
    pieces = {}
    ids = set()
    for emit in result.emits:
        assert emit.side is Side.SERVICE
        frame = Ether(emit.frame)
        assert len(bytes(frame[IPv6])) <= limit
        fh = frame[IPv6ExtHdrFragment]
        ids.add(fh.id)
        assert fh.nh == _NH[kind]
        pieces[fh.offset * 8] = (bytes(fh.payload), fh.m)
    assert ids == {0x5A5A}
    data = b""
    for off in sorted(pieces):
        assert off == len(data), "fragments leave a gap or overlap"
        data += pieces[off][0]
        assert pieces[off][1] == (off != max(pieces))  # M set on all but the last
    assert len(data) == 1480
    nh = _NH[kind]
    v6 = Ether(result.emits[0].frame)[IPv6]
    assert l4_residue_v6(v6, nh, data) == 0, "reassembled checksum invalid"
    assert data[20:] == bytes(pkt.payload)[20:]


def _sized(kind: str, size: int):
    """A transport segment of exactly `size` bytes (scapy fills in the checksum)."""
    data = bytes(range(256)) * 8
    if kind == "tcp":
        return TCP(sport=40000, dport=80) / Raw(data[: size - 20])
    if kind == "udp":
        return UDP(sport=40000, dport=80) / Raw(data[: size - 8])
    return ICMP(type=8, id=1, seq=2) / Raw(data[: size - 8])


@pytest.mark.parametrize(("total", "df"), [(1259, 0), (1260, 0), (1261, 1), (1500, 1)])
def test_rfc7915_5_1_df_rule(total: int, df: int) -> None:
    pkt = ip6() / UDP(sport=1, dport=2) / Raw(bytes(total - 28))
    out = Ether(only(run(svc_frame(pkt), TO_LAN), Side.LAN))
    assert out[IP].len == total
    assert int(out[IP].flags.DF) == df
    assert_checksums(bytes(out))


@pytest.mark.parametrize(("lan_mtu", "expected_mtu"), [(1400, 1420), (1500, 1520), (1200, 1280)])
def test_rfc7915_5_1_too_big_for_lan_sends_packet_too_big(lan_mtu: int, expected_mtu: int) -> None:
    cfg = XlatConfig(lan_mtu=lan_mtu, service_mtu=max(lan_mtu + 20, 1280) + 100)
    size = max(lan_mtu + 1, 1261)  # > 1260 so DF would be set
    pkt = ip6() / UDP(sport=1, dport=2) / Raw(bytes(size - 28))
    err = Ether(error_back(run(svc_frame(pkt), TO_LAN, cfg), DropReason.TOO_BIG, Side.SERVICE))
    raw = bytes(err[IPv6].payload)
    assert raw[0:2] == b"\x02\x00"
    assert int.from_bytes(raw[4:8], "big") == expected_mtu  # LAN MTU + 20, >= 1280
    assert err[IPv6].dst == SVC_IP6 and err.dst == SVC_MAC
    assert len(bytes(err[IPv6])) <= 1280  # RFC 4443 §2.4 (c)
    assert raw[8:].startswith(bytes(pkt)[:100])
    assert_checksums(bytes(err))


def test_rfc7915_5_1_small_lan_mtu_df0_packet_is_fragmented() -> None:
    """A <= 1260-byte packet (DF=0 by §5.1) larger than a small LAN MTU is fragmented."""
    cfg = XlatConfig(lan_mtu=576, service_mtu=1280)
    pkt = ip6() / UDP(sport=1, dport=2) / Raw(bytes(range(256)) * 4)
    result = run(svc_frame(pkt), TO_LAN, cfg)
    assert result.drop is None and len(result.emits) == 2
    data = b""
    ids = set()
    for emit in result.emits:
        v4 = Ether(emit.frame)[IP]
        assert v4.len <= 576 and not v4.flags.DF
        assert v4.frag * 8 == len(data)
        ids.add(v4.id)
        data += bytes(v4.payload)[: v4.len - 20]
    assert len(ids) == 1
    assert data[8:] == bytes(pkt[UDP])[8:]


def test_rfc7915_5_1_1_ipv6_fragment_refragmented_for_small_lan_mtu() -> None:
    cfg = XlatConfig(lan_mtu=576, service_mtu=1280)
    data = bytes(range(256)) * 4  # 1024 bytes of a later fragment
    pkt = ip6() / IPv6ExtHdrFragment(id=0xCAFE0102, offset=10, m=1, nh=17) / Raw(data)
    result = run(svc_frame(pkt), TO_LAN, cfg)
    assert result.drop is None and len(result.emits) == 2
    got = b""
    for emit in result.emits:
        v4 = Ether(emit.frame)[IP]
        assert v4.len <= 576 and v4.id == 0x0102 and not v4.flags.DF
        assert v4.flags.MF  # the original had M=1, so even the last piece keeps MF
        assert v4.frag == 10 + len(got) // 8
        got += bytes(v4.payload)[: v4.len - 20]
    assert got == data


def test_rfc7915_5_1_1_fragments_of_one_datagram_keep_one_protocol() -> None:
    """A Destination Options header after the Fragment header belongs to the fragmentable
    part (RFC 8200 §4.5): the first fragment must not lose it while later fragments keep
    their offsets, and all IPv4 fragments of one datagram must carry the same Protocol."""
    whole = bytes(IPv6ExtHdrDestOpt(nh=17) / UDP(sport=1, dport=2) / Raw(bytes(200)))
    first = ip6() / IPv6ExtHdrFragment(id=5, offset=0, m=1, nh=60) / Raw(whole[:112])
    later = ip6() / IPv6ExtHdrFragment(id=5, offset=14, m=0, nh=60) / Raw(whole[112:])
    out1 = run(svc_frame(first), TO_LAN)
    out2 = run(svc_frame(later), TO_LAN)
    if out1.drop is not None or out2.drop is not None:
        assert out1.drop is not None and out2.drop is not None  # dropping both is fine
        return
    v1, v2 = Ether(out1.emits[0].frame)[IP], Ether(out2.emits[0].frame)[IP]
    assert v1.proto == v2.proto
    assert v1.frag * 8 + v1.len - 20 == v2.frag * 8  # no gap or overlap on reassembly


def test_ipv4_fragment_past_65535_is_dropped_not_crashed() -> None:
    """RFC 791 / RFC 8200 §4.5: offset*8 + length beyond 65535 cannot reassemble (the "ping
    of death"); re-fragmenting it must not overflow the 13-bit IPv6 offset field."""
    pkt = ip4(id=7, frag=8190, flags=0, proto=17) / Raw(bytes(1480))
    result = run(lan_frame(pkt), TO_SERVICE)
    assert result.drop is DropReason.FRAGMENT_INVALID


# ------------------------------------------------------------ §4.5 / §5.1 transport checksums


@pytest.mark.parametrize("kind", ["tcp", "udp"])
@pytest.mark.parametrize("delta", [1, 0x100, 0x7FFF])
def test_rfc7915_4_5_bad_checksum_stays_bad_by_same_amount(kind: str, delta: int) -> None:
    """RFC 1624 / RFC 7915 §4.5: checksum adjusted incrementally, not recomputed."""
    pkt = IP(bytes(ip4() / _l4(kind)))
    layer = pkt[TCP] if kind == "tcp" else pkt[UDP]
    layer.chksum = (layer.chksum + delta) % 0x10000 or 1
    pkt = IP(bytes(pkt))
    before = l4_residue_v4(pkt)
    assert before != 0
    out = Ether(only(run(lan_frame(pkt), TO_SERVICE, checksums=False), Side.SERVICE))
    seg = bytes(out[IPv6].payload)
    assert l4_residue_v6(out[IPv6], _PROTO4[kind], seg) == before
    back = Ether(only(run(bytes(out), TO_LAN, checksums=False), Side.LAN))
    assert l4_residue_v4(back[IP]) == before


@pytest.mark.parametrize("delta", [1, 0x1234])
def test_rfc7915_4_2_echo_bad_checksum_stays_bad(delta: int) -> None:
    pkt = IP(bytes(ip4() / ICMP(type=8) / Raw(b"ping")))
    pkt[ICMP].chksum = (pkt[ICMP].chksum + delta) % 0x10000
    pkt = IP(bytes(pkt))
    before = residue(bytes(pkt[ICMP]))
    assert before != 0
    out = Ether(only(run(lan_frame(pkt), TO_SERVICE, checksums=False), Side.SERVICE))
    assert l4_residue_v6(out[IPv6], 58, bytes(out[IPv6].payload)) == before


def test_rfc7915_4_5_udp_zero_checksum_compute() -> None:
    pkt = ip4() / UDP(sport=1, dport=2, chksum=0) / Raw(b"zero")
    out = Ether(only(run(lan_frame(pkt), TO_SERVICE), Side.SERVICE))
    assert out[UDP].chksum != 0
    assert l4_residue_v6(out[IPv6], 17, bytes(out[UDP])) == 0
    assert_checksums(bytes(out))


def test_rfc7915_4_5_udp_zero_checksum_drop_policy() -> None:
    cfg = XlatConfig(udp_zero_checksum=UdpZeroChecksum.DROP)
    pkt = ip4() / UDP(sport=1, dport=2, chksum=0) / Raw(b"zero")
    assert drop_only(run(lan_frame(pkt), TO_SERVICE, cfg)) is DropReason.UDP_ZERO_CHECKSUM


@pytest.mark.parametrize("policy", list(UdpZeroChecksum))
def test_rfc7915_4_5_fragmented_udp_zero_checksum_dropped(policy: UdpZeroChecksum) -> None:
    cfg = XlatConfig(udp_zero_checksum=policy)
    body = bytes(UDP(sport=1, dport=2, len=208, chksum=0) / Raw(bytes(200)))[:104]
    pkt = ip4(flags="MF", proto=17) / Raw(body)
    assert drop_only(run(lan_frame(pkt), TO_SERVICE, cfg)) is DropReason.UDP_ZERO_CHECKSUM


def test_rfc8200_8_1_ipv6_udp_zero_checksum_not_passed_on() -> None:
    pkt = ip6() / UDP(sport=1, dport=2, chksum=0) / Raw(b"zero")
    frame = svc_frame(pkt)
    assert drop_only(run(frame, TO_LAN)) is DropReason.UDP_ZERO_CHECKSUM


def test_udp_checksum_that_adjusts_to_zero_is_sent_as_ffff() -> None:
    """RFC 768: a computed 0 is transmitted as all ones (0 would mean "no checksum")."""
    header = bytes(UDP(sport=1, dport=2, len=10, chksum=0))
    partial = ones_complement_sum(pseudo_v4(SVC_IP, LAN_IP, 17, 10) + header)
    word = 0xFFFF - partial  # makes the IPv4 sum 0xFFFF, i.e. checksum 0 -> sent as 0xFFFF
    pkt = ip6() / UDP(sport=1, dport=2) / Raw(word.to_bytes(2, "big"))
    out = Ether(only(run(svc_frame(pkt), TO_LAN), Side.LAN))
    assert out[UDP].chksum == 0xFFFF
    assert l4_residue_v4(out[IP]) == 0


def test_rfc768_zero_checksum_computed_over_udp_length() -> None:
    """RFC 7915 §4.5 computes the checksum RFC 768 defines: over the UDP length (header
    field), not over IPv4 payload bytes that follow the datagram."""
    udp = bytes(UDP(sport=1, dport=2, len=12, chksum=0) / Raw(b"abcd"))
    pkt = ip4(proto=17) / Raw(udp + b"\xee\xee")  # 2 stray bytes after the datagram
    out = Ether(only(run(lan_frame(pkt), TO_SERVICE), Side.SERVICE))
    seg = bytes(out[IPv6].payload)[:12]
    assert l4_residue_v6(out[IPv6], 17, seg) == 0


def test_rfc8200_4_5_ipv6_fragment_past_65535_is_dropped() -> None:
    """RFC 8200 §4.5: a fragment whose offset and length put it beyond 65535 bytes must
    be discarded; it must never be re-fragmented into IPv4 offsets that wrap."""
    cfg = XlatConfig(lan_mtu=576, service_mtu=1280)
    pkt = ip6() / IPv6ExtHdrFragment(id=9, offset=8150, m=0, nh=17) / Raw(bytes(1400))
    result = run(svc_frame(pkt), TO_LAN, cfg)
    for emit in result.emits:  # whatever is emitted must at least be self-consistent
        v4 = Ether(emit.frame)[IP]
        assert v4.frag >= 8150
    assert result.drop is DropReason.FRAGMENT_INVALID


# ------------------------------------------------------------ unknown upper layers


@pytest.mark.parametrize(
    "nh", [253, 254, 59, 51, 132], ids=["exp-253", "exp-254", "no-next", "ah", "sctp"]
)
def test_rfc7915_5_1_unknown_next_header_is_copied_to_protocol(nh: int) -> None:
    """RFC 7915 §5.1 Protocol: the last Next Header of the chain, copied (RFC 3692/4727
    reserve 253 and 254 for experiments); the payload crosses untouched."""
    body = bytes(range(64))
    pkt = ip6(nh=nh, hlim=17) / Raw(body)
    out = Ether(only(run(svc_frame(pkt), TO_LAN), Side.LAN))
    v4 = out[IP]
    assert v4.proto == nh and v4.ttl == 17 and v4.len == 20 + len(body)
    assert bytes(v4.payload)[: len(body)] == body
    # behind skipped extension headers, and in a later fragment, too
    chained = ip6() / IPv6ExtHdrDestOpt(nh=nh) / Raw(body)
    assert Ether(only(run(svc_frame(chained), TO_LAN), Side.LAN))[IP].proto == nh
    later = ip6() / IPv6ExtHdrFragment(id=3, offset=9, m=0, nh=nh) / Raw(body)
    assert Ether(only(run(svc_frame(later), TO_LAN), Side.LAN))[IP].proto == nh


def test_rfc7915_4_1_unknown_protocol_is_copied_to_next_header() -> None:
    pkt = ip4(proto=253) / Raw(bytes(range(40)))
    out = Ether(only(run(lan_frame(pkt), TO_SERVICE), Side.SERVICE))
    assert out[IPv6].nh == 253 and bytes(out[IPv6].payload) == bytes(range(40))


# ------------------------------------------------------------ atomic fragments (RFC 6946)


def test_rfc6946_atomic_fragment_translated_as_a_whole_packet_keeping_its_id() -> None:
    """RFC 6946 §4: offset 0 and M = 0 is a whole packet; RFC 7915 §5.1.1 still takes the
    IPv4 ID from the Fragment header's low 16 bits, with DF and MF clear."""
    udp = UDP(sport=1, dport=2) / Raw(b"atomic")
    pkt = ip6() / IPv6ExtHdrFragment(id=0x1234ABCD, offset=0, m=0, nh=17) / udp
    out = Ether(only(run(svc_frame(pkt), TO_LAN), Side.LAN))
    v4 = out[IP]
    assert v4.id == 0xABCD and v4.flags == 0 and v4.frag == 0
    assert v4.proto == 17 and bytes(out[UDP].payload) == b"atomic"


# ------------------------------------------------------------ DF fragments (RFC 7915 §4.1)


def test_rfc7915_4_1_df_fragment_too_big_gets_fragmentation_needed() -> None:
    """RFC 7915 §4.1: DF set and too big for the next hop: "fragmentation needed", not
    fragments. An IPv4 fragment always gets a Fragment header (§4), so the MTU reported
    is the IPv6 MTU minus 28 (IPv6 + Fragment header - IPv4 header)."""
    cfg = XlatConfig(service_mtu=1400)
    pkt = ip4(flags="DF+MF", id=0x77, proto=17) / Raw(b"\x11" * 1360)  # 48 + 1360 > 1400
    err = Ether(error_back(run(lan_frame(pkt), TO_SERVICE, cfg), DropReason.TOO_BIG, Side.LAN))
    assert (err[ICMP].type, err[ICMP].code) == (3, 4)
    assert err[ICMP].nexthopmtu == 1400 - 28
    assert err[IP].dst == LAN_IP
    assert bytes(err[ICMP].payload).startswith(bytes(pkt)[:28])
    # a sender that obeys: fragments of that size cross whole, with a Fragment header
    obeying = ip4(flags="DF+MF", id=0x77, proto=17) / Raw(b"\x11" * (1400 - 28 - 20))
    out = Ether(only(run(lan_frame(obeying), TO_SERVICE, cfg), Side.SERVICE))
    assert len(bytes(out[IPv6])) == 1400 and out[IPv6ExtHdrFragment].m == 1


def test_rfc7915_4_1_df_fragment_is_never_split_by_lowest_ipv6_mtu() -> None:
    """lowest-ipv6-mtu is for DF = 0 (RFC 7915 §4.1); a DF fragment within the link MTU
    crosses as one IPv6 fragment."""
    cfg = XlatConfig(service_mtu=1500, lowest_ipv6_mtu=1280)
    pkt = ip4(flags="DF+MF", id=5, proto=17) / Raw(b"\x11" * 1400)
    out = Ether(only(run(lan_frame(pkt), TO_SERVICE, cfg), Side.SERVICE))
    assert out[IPv6].plen == 8 + 1400
