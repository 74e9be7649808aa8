"""Packet codecs (cjb.common.packet): round trips against scapy, RFC 1071 / RFC 1624
checksum vectors, and "parsers never raise" on truncations and random bytes."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import (
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw
from xlat_frames import ones_complement_sum

from cjb.common.packet import arp, checksum, ethernet, ipv4, ipv6, ndp
from cjb.common.packet.errors import Invalid, Problem

PROFILE = settings(max_examples=200, deadline=None, derandomize=True)

# ------------------------------------------------------------------ RFC 1071 / RFC 1624


def test_rfc1071_3_numerical_example() -> None:
    """RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2 (checksum 220d)."""
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert checksum.ones_sum(data) == 0xDDF2
    assert checksum.internet_checksum(data) == 0x220D
    assert checksum.verify(data + (0x220D).to_bytes(2, "big"))


def test_rfc1071_odd_length_pads_with_zero() -> None:
    """RFC 1071 §4.1: a trailing odd byte is the high byte of a final word."""
    assert checksum.ones_sum(b"\xab") == 0xAB00
    assert checksum.ones_sum(b"\x00\x01\xf2") == 0xF201


def test_rfc1071_end_around_carry() -> None:
    assert checksum.ones_sum(b"\xff\xff\x00\x01") in (0x0001,)
    assert checksum.ones_sum(b"\x80\x00\x80\x00") == 0x0001


def test_ipv4_header_checksum_vector() -> None:
    """A well-known IPv4 header: 4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7."""
    header = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert checksum.internet_checksum(header) == 0xB861
    assert checksum.verify(header[:10] + b"\xb8\x61" + header[12:])


def test_rfc1624_3_example() -> None:
    """RFC 1624 §3 example: HC=0xDD2F, m=0x5555 -> m'=0x3285 gives HC'=0x0000 (eqn. 3)."""
    assert checksum.adjust(0xDD2F, 0x5555, 0x3285) == 0x0000


def test_rfc1624_adjust_udp_never_zero() -> None:
    assert checksum.adjust_udp(0xDD2F, 0x5555, 0x3285) == 0xFFFF


def test_internet_checksum_of_zero_sum_is_ffff() -> None:
    assert checksum.internet_checksum(bytes(8)) == 0xFFFF


@PROFILE
@given(data=st.binary(max_size=300))
def test_ones_sum_matches_naive_loop(data: bytes) -> None:
    naive = ones_complement_sum(data)
    assert checksum.ones_sum(data) == naive % 0xFFFF


@PROFILE
@given(
    data=st.binary(min_size=4, max_size=200).map(lambda b: b if len(b) % 2 == 0 else b + b"\0"),
    index=st.integers(0, 99),
    new_word=st.integers(0, 0xFFFF),
)
def test_incremental_update_equals_full_recompute(data: bytes, index: int, new_word: int) -> None:
    """RFC 1624 §3: updating one 16-bit word incrementally == recomputing from scratch
    (as a one's complement value: 0x0000 and 0xFFFF are the same number)."""
    words = len(data) // 2
    i = 1 + index % (words - 1) if words > 1 else 0
    body = bytearray(data)
    body[0:2] = b"\x00\x00"  # word 0 is the checksum field
    full = checksum.internet_checksum(body)
    body[0:2] = full.to_bytes(2, "big")
    if i == 0:
        return
    old = int.from_bytes(body[2 * i : 2 * i + 2], "big")
    body[2 * i : 2 * i + 2] = new_word.to_bytes(2, "big")
    incremental = checksum.adjust(full, old, new_word)
    body[0:2] = b"\x00\x00"
    recomputed = checksum.internet_checksum(body)
    assert incremental % 0xFFFF == recomputed % 0xFFFF
    body[0:2] = incremental.to_bytes(2, "big")
    assert checksum.verify(body)


@PROFILE
@given(
    data=st.binary(min_size=2, max_size=100),
    delta=st.integers(1, 0xFFFE),
    new=st.binary(min_size=8, max_size=8),
)
def test_adjust_keeps_an_error_by_the_same_amount(data: bytes, delta: int, new: bytes) -> None:
    body = bytearray(data.ljust(12, b"\0"))
    body[0:2] = b"\x00\x00"
    body[0:2] = ((checksum.internet_checksum(body) + delta) % 0x10000).to_bytes(2, "big")
    err_before = checksum.ones_sum(body)
    old = bytes(body[4:12])
    adjusted = checksum.adjust(
        int.from_bytes(body[0:2], "big"), checksum.ones_sum(old), checksum.ones_sum(new)
    )
    body[4:12] = new
    body[0:2] = adjusted.to_bytes(2, "big")
    assert checksum.ones_sum(body) == err_before


def test_pseudo_header_sums_match_scapy() -> None:
    v4 = IP(bytes(IP(src="192.168.0.10", dst="192.168.0.100") / UDP(sport=1, dport=2) / b"abc"))
    seg = bytes(v4[UDP])
    extra = checksum.pseudo_header_sum_v4(
        ipaddress.IPv4Address(v4.src).packed, ipaddress.IPv4Address(v4.dst).packed, 17, len(seg)
    )
    assert checksum.verify(seg, extra)
    v6 = IPv6(bytes(IPv6(src="fe80::c0a8:a", dst="fe80::c0a8:64") / UDP() / b"abc"))
    seg6 = bytes(v6[UDP])
    extra6 = checksum.pseudo_header_sum_v6(
        ipaddress.IPv6Address(v6.src).packed, ipaddress.IPv6Address(v6.dst).packed, 17, len(seg6)
    )
    assert checksum.verify(seg6, extra6)


# ------------------------------------------------------------------ round trips vs scapy


def test_ethernet_round_trip() -> None:
    frame = bytes(Ether(dst="01:00:5e:00:00:fb", src="02:00:00:00:00:0a", type=0x0800))
    eth = ethernet.parse_ethernet(frame)
    assert eth == ethernet.EthernetHeader(
        bytes.fromhex("01005e0000fb"), bytes.fromhex("02000000000a"), 0x0800
    )
    assert ethernet.build_ethernet(*eth) == frame
    assert ethernet.is_multicast_mac(eth.dst) and not ethernet.is_multicast_mac(eth.src)


@pytest.mark.parametrize(
    ("group", "mac"),
    [
        ("224.0.0.251", "01005e0000fb"),
        ("239.255.255.250", "01005e7ffffa"),
        ("239.128.0.1", "01005e000001"),
    ],
)
def test_rfc1112_6_4_ipv4_multicast_mac(group: str, mac: str) -> None:
    assert ethernet.ipv4_multicast_mac(ipaddress.IPv4Address(group).packed).hex() == mac


@pytest.mark.parametrize(
    ("group", "mac"), [("ff02::fb", "3333000000fb"), ("ff02::1:ffa8:a", "3333ffa8000a")]
)
def test_rfc2464_7_ipv6_multicast_mac(group: str, mac: str) -> None:
    assert ethernet.ipv6_multicast_mac(ipaddress.IPv6Address(group).packed).hex() == mac


def test_mac_text() -> None:
    assert ethernet.parse_mac("02:00:00:c7:b0:01") == bytes.fromhex("020000c7b001")
    assert ethernet.format_mac(bytes.fromhex("020000c7b001")) == "02:00:00:c7:b0:01"
    with pytest.raises(ValueError, match="not a MAC"):
        ethernet.parse_mac("02:00:00")


@pytest.mark.parametrize("op", [1, 2])
def test_arp_round_trip(op: int) -> None:
    raw = bytes(
        ARP(
            op=op,
            hwsrc="02:00:00:00:00:0a",
            psrc="192.168.0.10",
            hwdst="02:00:00:00:00:64",
            pdst="192.168.0.100",
        )
    )
    parsed = arp.parse_arp(raw)
    assert isinstance(parsed, arp.ArpPacket)
    assert parsed.op == op and parsed.sender_ip == bytes((192, 168, 0, 10))
    assert arp.build_arp(parsed) == raw


def test_rfc5227_predicates() -> None:
    probe = arp.ArpPacket(1, b"\x02" * 6, bytes(4), bytes(6), b"\xc0\xa8\x00\x0a")
    announce = arp.ArpPacket(1, b"\x02" * 6, b"\xc0\xa8\x00\x0a", bytes(6), b"\xc0\xa8\x00\x0a")
    assert probe.is_probe and not probe.is_announcement
    assert announce.is_announcement and not announce.is_probe


@PROFILE
@given(
    tos=st.integers(0, 255),
    ident=st.integers(0, 65535),
    flags_offset=st.integers(0, 0x7FFF),
    ttl=st.integers(0, 255),
    proto=st.integers(0, 255),
    src=st.binary(min_size=4, max_size=4),
    dst=st.binary(min_size=4, max_size=4),
    payload=st.binary(max_size=40),
)
def test_ipv4_build_parse_round_trip(tos, ident, flags_offset, ttl, proto, src, dst, payload):
    header = ipv4.build_ipv4(
        tos=tos,
        total_length=20 + len(payload),
        identification=ident,
        flags_offset=flags_offset,
        ttl=ttl,
        protocol=proto,
        src=src,
        dst=dst,
    )
    scapy_ip = IP(header + payload)
    del scapy_ip.chksum
    assert bytes(scapy_ip)[:20] == header  # scapy agrees on the header checksum
    parsed = ipv4.parse_ipv4(header + payload)
    assert isinstance(parsed, ipv4.IPv4Header)
    assert (parsed.tos, parsed.identification, parsed.flags_offset, parsed.ttl) == (
        tos,
        ident,
        flags_offset,
        ttl,
    )
    assert (parsed.protocol, parsed.src, parsed.dst, parsed.options) == (proto, src, dst, b"")


def test_ipv4_parse_with_options_and_flags() -> None:
    raw = bytes(
        IP(
            src="192.168.0.10",
            dst="192.168.0.100",
            flags="MF",
            frag=3,
            id=77,
            options=[Raw(b"\x83\x07\x04\xc0\xa8\x00\x01\x00")],
        )
        / b"data"
    )
    parsed = ipv4.parse_ipv4(raw)
    assert isinstance(parsed, ipv4.IPv4Header)
    assert parsed.ihl == 28 and parsed.options == b"\x83\x07\x04\xc0\xa8\x00\x01\x00"
    assert parsed.more_fragments and parsed.fragment_offset == 3 and parsed.is_fragment
    assert not parsed.dont_fragment
    assert ipv4.has_unexpired_source_route(parsed.options)


@pytest.mark.parametrize(
    ("options", "unexpired"),
    [
        (b"\x83\x07\x04\xc0\xa8\x00\x01\x00", True),  # LSRR pointer 4 <= 7
        (b"\x83\x07\x08\xc0\xa8\x00\x01\x00", False),  # exhausted
        (b"\x89\x0b\x08" + bytes(8) + b"\x00", True),  # SSRR, second hop next
        (b"\x89\x0b\x0c" + bytes(8) + b"\x00", False),
        (b"\x01\x83\x07\x04\xc0\xa8\x00\x01", True),  # after a NOP
        (b"\x07\x07\x04" + bytes(4) + b"\x00", False),  # record route is not a source route
        (b"\x00\x83\x07\x04\xc0\xa8\x00\x01", False),  # after end-of-list
        (b"\x83\x01", False),  # malformed length
    ],
)
def test_rfc791_source_route_expiry(options: bytes, unexpired: bool) -> None:
    assert ipv4.has_unexpired_source_route(options) is unexpired


def test_ipv4_invalid_cases() -> None:
    good = bytes(IP(src="1.2.3.4", dst="5.6.7.8") / b"xx")
    bad_sum = good[:10] + b"\x00\x00" + good[12:]
    assert ipv4.parse_ipv4(bad_sum).problem is Problem.BAD_CHECKSUM  # type: ignore[union-attr]
    assert ipv4.parse_ipv4(b"\x65" + good[1:]).problem is Problem.MALFORMED  # type: ignore[union-attr]
    assert ipv4.parse_ipv4(b"\x44" + good[1:]).problem is Problem.MALFORMED  # type: ignore[union-attr]
    assert ipv4.parse_ipv4(good[:-1]).problem is Problem.TRUNCATED  # type: ignore[union-attr]
    # quoted packets may be cut short and carry no checked checksum
    assert isinstance(ipv4.parse_ipv4(bad_sum[:20], quoted=True), ipv4.IPv4Header)


def test_ipv6_round_trip_and_extension_walk() -> None:
    pkt = IPv6(
        bytes(
            IPv6(src="fe80::c0a8:64", dst="fe80::c0a8:a", tc=0xB8, hlim=7)
            / IPv6ExtHdrHopByHop()
            / IPv6ExtHdrDestOpt()
            / IPv6ExtHdrRouting(addresses=["fe80::1"], segleft=1)
            / IPv6ExtHdrFragment(id=0xDEADBEEF, offset=0, m=1)
            / UDP()
            / b"x"
        )
    )
    raw = bytes(pkt)
    header = ipv6.parse_ipv6(raw)
    assert isinstance(header, ipv6.IPv6Header)
    assert header.traffic_class == 0xB8 and header.hop_limit == 7
    rebuilt = ipv6.build_ipv6(
        traffic_class=0xB8,
        payload_length=header.payload_length,
        next_header=header.next_header,
        hop_limit=7,
        src=header.src,
        dst=header.dst,
    )
    assert rebuilt == raw[:40]
    chain = ipv6.walk_extensions(raw, header.next_header, len(raw))
    assert isinstance(chain, ipv6.ExtensionChain)
    routing_at = 40 + 8 + 8
    assert chain.routing_segments_left_offset == routing_at + 3
    assert chain.fragment == ipv6.FragmentHeader(17, 0, True, 0xDEADBEEF)
    assert chain.upper_layer == 17
    assert raw[chain.upper_offset :] == bytes(pkt[UDP])


@pytest.mark.parametrize(("offset", "more", "ident"), [(0, False, 0), (8191, True, 0xFFFFFFFF)])
def test_fragment_header_round_trip(offset: int, more: bool, ident: int) -> None:
    raw = ipv6.build_fragment(6, offset, more, ident)
    scapy_frag = IPv6ExtHdrFragment(raw)
    assert (scapy_frag.nh, scapy_frag.offset, scapy_frag.m, scapy_frag.id) == (
        6,
        offset,
        int(more),
        ident,
    )
    assert ipv6.parse_fragment(raw, 0) == ipv6.FragmentHeader(6, offset, more, ident)


def test_too_many_extension_headers_is_malformed() -> None:
    chain = IPv6(src="fe80::1", dst="fe80::2")
    for _ in range(ipv6.MAX_EXTENSION_HEADERS + 1):
        chain = chain / IPv6ExtHdrDestOpt()
    raw = bytes(chain / UDP())
    result = ipv6.walk_extensions(raw, 60, len(raw))
    assert isinstance(result, Invalid) and result.problem is Problem.MALFORMED


@pytest.mark.parametrize("kind", ["ns", "na"])
def test_ndp_round_trip_against_scapy(kind: str) -> None:
    src = ipaddress.IPv6Address("fe80::c0a8:a").packed
    dst = ipaddress.IPv6Address("ff02::1:ffa8:64").packed
    target = ipaddress.IPv6Address("fe80::c0a8:64").packed
    mac = bytes.fromhex("02000000000a")
    if kind == "ns":
        msg = ndp.NeighborMessage(135, 0, target, mac)
        ref = ICMPv6ND_NS(tgt="fe80::c0a8:64") / ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:00:00:0a")
    else:
        msg = ndp.NeighborMessage(136, ndp.NA_FLAG_SOLICITED | ndp.NA_FLAG_OVERRIDE, target, mac)
        ref = ICMPv6ND_NA(tgt="fe80::c0a8:64", R=0, S=1, O=1) / ICMPv6NDOptDstLLAddr(
            lladdr="02:00:00:00:00:0a"
        )
    built = ndp.build_neighbor_message(msg, src, dst)
    expected = bytes(IPv6(src="fe80::c0a8:a", dst="ff02::1:ffa8:64") / ref)[40:]
    assert built == expected
    assert ndp.parse_neighbor_message(built) == msg
    assert ndp.solicited_node(target) == dst


# ------------------------------------------------------------------ never raise


def _valid_headers() -> list[tuple[str, bytes]]:
    return [
        ("eth", bytes(Ether() / b"")),
        ("arp", bytes(ARP(psrc="192.168.0.10", pdst="192.168.0.1"))),
        (
            "ipv4",
            bytes(IP(src="1.2.3.4", dst="5.6.7.8", options=[Raw(b"\x01\x01\x01\x00")]) / b"abcd"),
        ),
        (
            "ipv6",
            bytes(
                IPv6(src="fe80::1", dst="fe80::2")
                / IPv6ExtHdrHopByHop()
                / IPv6ExtHdrRouting(addresses=["fe80::3"], segleft=1)
                / IPv6ExtHdrFragment()
                / UDP()
            ),
        ),
        (
            "ndp",
            bytes(ICMPv6ND_NS(tgt="fe80::1") / ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:00:00:01")),
        ),
    ]


def _parse_all(kind: str, data: bytes) -> list[object]:
    out: list[object] = []
    if kind == "eth":
        out.append(ethernet.parse_ethernet(data))
    elif kind == "arp":
        out.append(arp.parse_arp(data))
    elif kind == "ipv4":
        out.append(ipv4.parse_ipv4(data))
        out.append(ipv4.parse_ipv4(data, quoted=True))
        out.extend(ipv4.iter_options(data[20:]))
        out.append(ipv4.has_unexpired_source_route(data[20:]))
    elif kind == "ipv6":
        out.append(ipv6.parse_ipv6(data))
        out.append(ipv6.parse_ipv6(data, quoted=True))
        out.append(ipv6.walk_extensions(data, data[6] if len(data) > 6 else 0, len(data)))
        out.append(ipv6.parse_fragment(data, 40))
    else:
        out.append(ndp.parse_neighbor_message(data))
    return out


@pytest.mark.parametrize(
    ("kind", "raw"), _valid_headers(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_parsers_never_raise_on_truncation(kind: str, raw: bytes) -> None:
    full = _parse_all(kind, raw)
    assert not any(isinstance(r, Invalid) for r in full[:1]), full
    for cut in range(len(raw)):
        for result in _parse_all(kind, raw[:cut]):
            if isinstance(result, Invalid):
                assert result.problem in Problem and result.detail


@PROFILE
@given(kind=st.sampled_from(["eth", "arp", "ipv4", "ipv6", "ndp"]), data=st.binary(max_size=120))
def test_parsers_never_raise_on_random_bytes(kind: str, data: bytes) -> None:
    if kind == "ipv4" and data:
        data = bytes((0x40 | (data[0] & 0x0F),)) + data[1:]
    if kind == "ipv6" and data:
        data = b"\x60" + data[1:]
    _parse_all(kind, data)
