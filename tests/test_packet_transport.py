"""UDP/TCP/ICMP header codecs against scapy as the independent dissector."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6

from cjb.common.packet.checksum import pseudo_header_sum_v6
from cjb.common.packet.errors import Invalid, Problem
from cjb.common.packet.icmp import IcmpHeader, build_icmp, parse_icmp
from cjb.common.packet.transport import build_tcp, build_udp, parse_tcp, parse_udp

ports = st.integers(0, 65535)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(ports, ports, st.binary(max_size=64))
def test_udp_header_matches_scapy(sport: int, dport: int, data: bytes) -> None:
    wire = bytes(UDP(sport=sport, dport=dport) / data)
    parsed = parse_udp(wire)
    assert not isinstance(parsed, Invalid)
    assert (parsed.src_port, parsed.dst_port, parsed.length) == (sport, dport, 8 + len(data))
    assert build_udp(sport, dport, parsed.length, parsed.checksum) == wire[:8]


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    ports,
    ports,
    st.integers(0, 2**32 - 1),
    st.integers(0, 255),
    st.sampled_from([b"", b"\x02\x04\x05\xb4", b"\x01\x01\x04\x02"]),
)
def test_tcp_header_round_trips_against_scapy(
    sport: int, dport: int, seq: int, flags: int, options: bytes
) -> None:
    wire = bytes(
        IP(src="192.168.0.10", dst="192.168.0.100")
        / TCP(sport=sport, dport=dport, seq=seq, flags=flags, options=[])
    )[20:]
    wire = wire[:12] + bytes((((20 + len(options)) // 4) << 4,)) + wire[13:20] + options
    parsed = parse_tcp(wire)
    assert not isinstance(parsed, Invalid)
    assert (parsed.src_port, parsed.dst_port, parsed.seq, parsed.flags) == (
        sport,
        dport,
        seq,
        flags,
    )
    assert parsed.header_len == 20 + len(options)
    assert build_tcp(parsed) == wire
    assert TCP(wire).dataofs * 4 == parsed.header_len


def test_tcp_and_udp_refuse_short_or_inconsistent_headers() -> None:
    assert parse_tcp(b"\x00" * 19).problem is Problem.TRUNCATED  # type: ignore[union-attr]
    bad_offset = bytes(12) + b"\x40" + bytes(7)  # data offset 16 bytes < 20
    assert parse_tcp(bad_offset).problem is Problem.MALFORMED  # type: ignore[union-attr]
    assert parse_tcp(bytes(12) + b"\x60" + bytes(7)).problem is Problem.TRUNCATED  # type: ignore[union-attr]
    assert parse_udp(b"\x00\x01\x00\x02\x00\x07\x00\x00").problem is Problem.MALFORMED  # type: ignore[union-attr]


def test_icmpv4_build_matches_scapy_checksum() -> None:
    built = build_icmp(IcmpHeader(8, 0, 0, b"\x12\x34\x00\x01"), b"ping")
    reference = bytes(ICMP(type=8, id=0x1234, seq=1) / b"ping")
    assert built == reference
    parsed = parse_icmp(built)
    assert not isinstance(parsed, Invalid)
    assert parsed.icmp_type == 8
    assert parsed.rest == b"\x12\x34\x00\x01"


def test_icmpv6_build_includes_the_pseudo_header() -> None:
    src, dst = "fe80::c0a8:a", "fe80::c0a8:64"
    reference = bytes(IPv6(src=src, dst=dst) / ICMPv6EchoRequest(id=7, seq=9, data=b"x"))[40:]
    import ipaddress

    pseudo = pseudo_header_sum_v6(
        ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed, 58, len(reference)
    )
    assert build_icmp(IcmpHeader(128, 0, 0, reference[4:8]), reference[8:], pseudo) == reference
    assert parse_icmp(b"\x80\x00").problem is Problem.TRUNCATED  # type: ignore[union-attr]
