"""Edges of the packet codecs that the round-trip tests do not reach: lengths exactly at a
bound, option lists cut one byte short, the detail an Invalid carries (the drop counters and
logs show it), padding, reserved fields. Each pins one boundary of the parsers in
cjb.common.packet (found by mutation testing, tools/mutation.py)."""

from __future__ import annotations

import pytest

from cjb.common.packet import checksum, icmp, ipv4, ipv6, ndp, transport
from cjb.common.packet.errors import Invalid, Problem

SRC6 = bytes.fromhex("fe80000000000000000000000000000a")
DST6 = bytes.fromhex("fe800000000000000000000000000064")


def _v6(payload: bytes, next_header: int = 59, plen: int | None = None) -> bytes:
    return (
        ipv6.build_ipv6(
            traffic_class=0,
            payload_length=len(payload) if plen is None else plen,
            next_header=next_header,
            hop_limit=64,
            src=SRC6,
            dst=DST6,
        )
        + payload
    )


# -- IPv4 header and options (RFC 791 §3.1) ---------------------------------------------------


def test_ipv4_wrong_version_names_the_version() -> None:
    header = bytearray(ipv4.build_ipv4(tos=0, total_length=20, identification=1,
                                       flags_offset=0, ttl=64, protocol=17,
                                       src=bytes(4), dst=bytes(4)))  # fmt: skip
    header[0] = 0x65  # version 6, IHL 5
    got = ipv4.parse_ipv4(bytes(header), check_checksum=False)
    assert got == Invalid(Problem.MALFORMED, "ipv4: version 6")


def test_option_kind_without_its_length_byte_is_truncated() -> None:
    # The last byte of the options is a kind that needs a length byte (RFC 791 §3.1).
    assert list(ipv4.iter_options(b"\x83")) == [
        Invalid(Problem.TRUNCATED, "ipv4 option length: need 2 bytes, have 1")
    ]
    assert list(ipv4.iter_options(b"\x01\x83")) == [
        Invalid(Problem.TRUNCATED, "ipv4 option length: need 3 bytes, have 2")
    ]


def test_two_byte_option_fits_exactly() -> None:
    assert list(ipv4.iter_options(b"\x94\x02")) == [(0x94, b"\x94\x02")]


@pytest.mark.parametrize("length", [0, 1])
def test_option_length_below_two_is_malformed(length: int) -> None:
    # The length counts the kind and length bytes themselves: < 2 cannot be (RFC 791 §3.1).
    got = list(ipv4.iter_options(bytes([0x83, length, 0, 0])))
    assert got == [Invalid(Problem.MALFORMED, f"ipv4: option 131 length {length}")]


def test_source_route_too_short_for_a_pointer_is_not_a_route() -> None:
    # LSRR with length 2 has no pointer byte: not a usable route (and no IndexError).
    assert ipv4.has_unexpired_source_route(b"\x83\x02\x00\x00") is False


def test_source_route_pointer_within_a_three_byte_option_counts() -> None:
    # The shortest option that carries a pointer (length 3); a pointer not past the option's
    # end means "not exhausted", so the packet is treated as source-routed (RFC 7915 §4.1
    # drops it) rather than forwarded without its route.
    assert ipv4.has_unexpired_source_route(b"\x83\x03\x03\x00") is True
    assert ipv4.has_unexpired_source_route(b"\x83\x03\x04\x00") is False


# -- IPv6 (RFC 8200) --------------------------------------------------------------------------


def test_ipv6_header_alone_is_a_whole_packet() -> None:
    got = ipv6.parse_ipv6(_v6(b""))
    assert isinstance(got, ipv6.IPv6Header) and got.payload_length == 0


def test_ipv6_short_payload_refused_unless_quoted() -> None:
    packet = _v6(b"x" * 10, plen=100)
    assert ipv6.parse_ipv6(packet) == Invalid(
        Problem.TRUNCATED, "ipv6 payload: need 140 bytes, have 50"
    )
    quoted = ipv6.parse_ipv6(packet, quoted=True)  # inside an ICMP error: cut short is normal
    assert isinstance(quoted, ipv6.IPv6Header) and quoted.payload_length == 100


def test_ipv6_wrong_version_names_the_version() -> None:
    packet = bytearray(_v6(b""))
    packet[0] = 0x40
    assert ipv6.parse_ipv6(bytes(packet)) == Invalid(Problem.MALFORMED, "ipv6: version 4")


def test_fragment_header_reserved_byte_is_zero() -> None:
    # RFC 8200 §4.5: the Reserved field is initialized to zero for transmission.
    assert ipv6.build_fragment(17, 185, True, 0x01020304) == bytes.fromhex("1100 05c9 01020304")


def test_extension_header_cut_inside_its_first_two_bytes() -> None:
    packet = _v6(b"\x11")  # hop-by-hop, only its next-header byte present
    got = ipv6.walk_extensions(packet, ipv6.NH_HOP_BY_HOP, len(packet))
    assert got == Invalid(Problem.TRUNCATED, "ipv6 extension header: need 42 bytes, have 41")


def test_extension_header_with_exactly_two_bytes_left_reports_its_full_length() -> None:
    packet = _v6(b"\x11\x00")  # hop-by-hop claiming 8 bytes, 2 present
    got = ipv6.walk_extensions(packet, ipv6.NH_HOP_BY_HOP, len(packet))
    assert got == Invalid(Problem.TRUNCATED, "ipv6 extension header: need 48 bytes, have 42")


def test_only_the_headers_a_translator_steps_over_are_extensions_to_it() -> None:
    # RFC 7915 §5.1: hop-by-hop, routing and destination options are stepped over and the
    # fragment header is translated; any other Next Header value (AH 51, Mobility 135, the
    # experimental 253/254, ...) is an upper layer whose number is copied into Protocol.
    assert frozenset({0, 43, 60}) == ipv6.SKIPPABLE_EXTENSIONS
    packet = _v6(b"")
    for nh in (51, 135, 139, 140, 253, 254):
        got = ipv6.walk_extensions(packet, nh, len(packet))
        assert isinstance(got, ipv6.ExtensionChain), (nh, got)
        assert (got.upper_layer, got.upper_offset, got.fragment) == (nh, 40, None), (nh, got)


# -- NDP options (RFC 4861 §4.6) --------------------------------------------------------------


def _ns(options: bytes) -> bytes:
    body = ndp.build_neighbor_message(
        ndp.NeighborMessage(ndp.V6_NEIGHBOR_SOLICITATION, 0, DST6, None), SRC6, DST6
    )
    return body + options


def test_ndp_option_header_cut_after_one_byte() -> None:
    got = ndp.parse_neighbor_message(_ns(b"\x01"))
    assert got == Invalid(Problem.TRUNCATED, "ndp option: need 26 bytes, have 25")


def test_ndp_option_with_two_bytes_left_reports_its_full_length() -> None:
    got = ndp.parse_neighbor_message(_ns(b"\x01\x01"))
    assert got == Invalid(Problem.TRUNCATED, "ndp option: need 32 bytes, have 26")


# -- TCP options padding (RFC 9293 §3.1) ------------------------------------------------------


@pytest.mark.parametrize(("options", "padded"), [(b"", 0), (b"\x01", 4), (b"\x01" * 3, 4),
                                                 (b"\x01" * 5, 8), (b"\x01" * 8, 8)])  # fmt: skip
def test_tcp_options_padded_to_32_bits(options: bytes, padded: int) -> None:
    header = transport.TcpHeader(1, 2, 3, 4, 0, 0x10, 512, 0, 0, options)
    built = transport.build_tcp(header)
    assert len(built) == 20 + padded
    assert built[12] >> 4 == (20 + padded) // 4
    assert built[20:] == options + bytes(padded - len(options))


def test_ipv6_flow_label_parsed_alone() -> None:
    packet = bytearray(_v6(b""))
    packet[0:4] = (0x6 << 28 | 0xAB << 20 | 0x12345).to_bytes(4, "big")
    got = ipv6.parse_ipv6(bytes(packet))
    assert isinstance(got, ipv6.IPv6Header)
    assert (got.traffic_class, got.flow_label) == (0xAB, 0x12345)


def test_eight_extension_headers_are_walked_nine_are_refused() -> None:
    # The walk is bounded (untrusted input), at MAX_EXTENSION_HEADERS exactly.
    def chain(n: int) -> bytes:
        headers = b"".join(bytes([60 if i < n - 1 else 17, 0]) + bytes(6) for i in range(n))
        return _v6(headers + bytes(8), next_header=60)

    eight = chain(ipv6.MAX_EXTENSION_HEADERS)
    got = ipv6.walk_extensions(eight, 60, len(eight))
    assert isinstance(got, ipv6.ExtensionChain)
    assert (got.upper_layer, got.upper_offset) == (17, 40 + 8 * ipv6.MAX_EXTENSION_HEADERS)
    nine = chain(ipv6.MAX_EXTENSION_HEADERS + 1)
    assert ipv6.walk_extensions(nine, 60, len(nine)) == Invalid(
        Problem.MALFORMED, f"ipv6: more than {ipv6.MAX_EXTENSION_HEADERS} extension headers"
    )


def test_ipv6_pseudo_header_carries_a_32_bit_length() -> None:
    # RFC 8200 §8.1: the Upper-Layer Packet Length is a 32-bit field (jumbograms, RFC 2675).
    length = 0x0001_0002
    pseudo = SRC6 + DST6 + length.to_bytes(4, "big") + bytes(3) + bytes([17])
    assert checksum.pseudo_header_sum_v6(SRC6, DST6, 17, length) == checksum.ones_sum(pseudo)


def test_icmpv4_error_types_are_rfc_1122s() -> None:
    # RFC 1122 §3.2.2: Destination Unreachable, Source Quench, Redirect, Time Exceeded,
    # Parameter Problem; an error is never sent about one of these.
    assert frozenset({3, 4, 5, 11, 12}) == icmp.V4_ERROR_TYPES


def test_udp_header_without_checksum_has_zero() -> None:
    assert transport.build_udp(5353, 5353, 8) == bytes.fromhex("14e9 14e9 0008 0000")


def test_ndp_link_layer_address_is_six_bytes_even_when_options_follow() -> None:
    mac = bytes.fromhex("02005e00010a")
    nonce = bytes([14, 1]) + bytes(6)  # RFC 3971 Nonce option after the LLA option
    got = ndp.parse_neighbor_message(_ns(bytes([ndp.OPT_SOURCE_LLA, 1]) + mac + nonce))
    assert isinstance(got, ndp.NeighborMessage) and got.link_layer_address == mac
