"""RFC 7915 §4.2-4.4 and §5.2-5.4 vectors: ICMP <-> ICMPv6 translation.

Errors are built by hand (type, code, rest-of-header, quoted packet) with a checksum from
the naive RFC 1071 loop in xlat_frames, so every byte is under the test's control. The
type/code tables are parametrized over every code the RFC lists, including the ones that
must be dropped.
"""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    IPv6,
    IPv6ExtHdrFragment,
)
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from xlat_frames import (
    LAN_IP,
    LAN_IP6,
    NO_IP,
    ROUTER_IP,
    ROUTER_IP6,
    SVC_IP,
    SVC_IP6,
    TO_LAN,
    TO_SERVICE,
    assert_checksums,
    drop_only,
    icmp4_raw,
    icmp6_raw,
    l4_residue_v4,
    l4_residue_v6,
    lan_frame,
    only,
    residue,
    run,
    svc_frame,
)

from cjb.gateway.xlat import DropReason, Side

# The packet an ICMPv4 error from the LAN side talks about: one the service host sent
# (already translated to IPv4), service -> LAN client.
QUOTED_V4 = bytes(IP(src=SVC_IP, dst=LAN_IP, ttl=3, id=0x4321) / UDP(sport=53, dport=4000) / b"q")
QUOTED_V6 = bytes(IPv6(src=LAN_IP6, dst=SVC_IP6, hlim=3) / UDP(sport=4000, dport=53) / b"q")


def _v4_error(icmp_type: int, code: int, rest: bytes = bytes(4), quoted: bytes = QUOTED_V4):
    """ICMPv4 error from the LAN client about a packet from the service host."""
    msg = icmp4_raw(icmp_type, code, rest, quoted)
    return lan_frame(IP(src=LAN_IP, dst=SVC_IP, proto=1) / Raw(msg))


def _v6_error(icmp_type: int, code: int, rest: bytes = bytes(4), quoted: bytes = QUOTED_V6):
    """ICMPv6 error from the service host about a packet from the LAN client."""
    msg = icmp6_raw(icmp_type, code, rest, quoted, SVC_IP6, LAN_IP6)
    return svc_frame(IPv6(src=SVC_IP6, dst=LAN_IP6, nh=58) / Raw(msg))


def _icmp6(frame: bytes) -> tuple[IPv6, bytes]:
    v6 = Ether(frame)[IPv6]
    msg = bytes(v6.payload)
    assert l4_residue_v6(v6, 58, msg) == 0, "ICMPv6 checksum invalid"
    return v6, msg


def _icmp4(frame: bytes) -> tuple[IP, bytes]:
    v4 = Ether(frame)[IP]
    msg = bytes(v4.payload)[: v4.len - 20]
    assert residue(msg) == 0, "ICMPv4 checksum invalid"
    return v4, msg


# ------------------------------------------------------------ echo (§4.2, §5.2)


@pytest.mark.parametrize(("t4", "t6"), [(8, 128), (0, 129)], ids=["request", "reply"])
def test_rfc7915_4_2_echo_to_icmpv6(t4: int, t6: int) -> None:
    pkt = IP(src=LAN_IP, dst=SVC_IP) / ICMP(type=t4, id=0x1234, seq=77) / Raw(b"abcdefgh" * 9)
    v6, msg = _icmp6(only(run(lan_frame(pkt), TO_SERVICE), Side.SERVICE))
    assert (msg[0], msg[1]) == (t6, 0) and v6.nh == 58
    assert msg[4:] == bytes(pkt[ICMP])[4:]  # id, seq, data unchanged
    assert_checksums(bytes(Ether(only(run(lan_frame(pkt), TO_SERVICE), Side.SERVICE))))


@pytest.mark.parametrize(
    ("cls", "t4"), [(ICMPv6EchoRequest, 8), (ICMPv6EchoReply, 0)], ids=["request", "reply"]
)
def test_rfc7915_5_2_echo_to_icmpv4(cls: type, t4: int) -> None:
    pkt = IPv6(src=SVC_IP6, dst=LAN_IP6) / cls(id=0x1234, seq=77, data=b"abcdefgh" * 9)
    frame = only(run(svc_frame(pkt), TO_LAN), Side.LAN)
    _v4, msg = _icmp4(frame)
    assert (msg[0], msg[1]) == (t4, 0)
    assert msg[4:] == bytes(IPv6(bytes(pkt)).payload)[4:]
    assert_checksums(frame)


# ------------------------------------------------------------ §4.2 type/code table, v4 -> v6

# ICMPv4 Destination Unreachable code -> (ICMPv6 type, code), or None: silently drop.
_UNREACH_4TO6 = {
    0: (1, 0),  # net unreachable -> no route
    1: (1, 0),  # host unreachable
    2: (4, 1),  # protocol unreachable -> parameter problem, unrecognised next header
    3: (1, 4),  # port unreachable
    4: (2, 0),  # fragmentation needed -> packet too big
    5: (1, 0),  # source route failed
    6: (1, 0),
    7: (1, 0),
    8: (1, 0),
    9: (1, 1),  # admin prohibited
    10: (1, 1),
    11: (1, 0),
    12: (1, 0),
    13: (1, 1),  # communication administratively prohibited
    14: None,  # host precedence violation: drop
    15: (1, 1),  # precedence cutoff
    16: None,  # unknown codes: drop
    255: None,
}


@pytest.mark.parametrize(("code", "expected"), list(_UNREACH_4TO6.items()))
def test_rfc7915_4_2_destination_unreachable_codes(code: int, expected) -> None:
    rest = b"\x00\x00\x05\x78" if code == 4 else bytes(4)
    result = run(_v4_error(3, code, rest), TO_SERVICE)
    if expected is None:
        assert drop_only(result) is DropReason.ICMP_UNTRANSLATABLE
        return
    v6, msg = _icmp6(only(result, Side.SERVICE))
    assert (msg[0], msg[1]) == expected
    assert (v6.src, v6.dst) == (LAN_IP6, SVC_IP6)
    if code == 2:
        assert int.from_bytes(msg[4:8], "big") == 6  # pointer: IPv6 Next Header field


@pytest.mark.parametrize("code", [0, 1])
def test_rfc7915_4_2_time_exceeded(code: int) -> None:
    _v6, msg = _icmp6(only(run(_v4_error(11, code), TO_SERVICE), Side.SERVICE))
    assert (msg[0], msg[1]) == (3, code)


# RFC 7915 Figure 3: IPv4 pointer -> IPv6 pointer (None: n/a, drop)
_FIGURE_3 = {0: 0, 1: 1, 2: 4, 3: 4, 4: None, 5: None, 6: None, 7: None, 8: 7, 9: 6}
_FIGURE_3 |= {10: None, 11: None} | dict.fromkeys(range(12, 16), 8)
_FIGURE_3 |= dict.fromkeys(range(16, 20), 24) | {20: None, 40: None}


@pytest.mark.parametrize("code", [0, 2])
@pytest.mark.parametrize(("pointer", "expected"), list(_FIGURE_3.items()))
def test_rfc7915_4_2_parameter_problem_pointer_figure_3(code: int, pointer: int, expected) -> None:
    result = run(_v4_error(12, code, bytes((pointer, 0, 0, 0))), TO_SERVICE)
    if expected is None:
        assert drop_only(result) is DropReason.ICMP_UNTRANSLATABLE
        return
    _v6, msg = _icmp6(only(result, Side.SERVICE))
    assert (msg[0], msg[1]) == (4, 0)
    assert int.from_bytes(msg[4:8], "big") == expected


@pytest.mark.parametrize("code", [1, 3, 255])
def test_rfc7915_4_2_parameter_problem_other_codes_dropped(code: int) -> None:
    result = run(_v4_error(12, code, bytes(4)), TO_SERVICE)
    assert drop_only(result) is DropReason.ICMP_UNTRANSLATABLE


@pytest.mark.parametrize(
    "icmp_type",
    [4, 5, 6, 9, 10, 13, 14, 15, 16, 17, 18, 30, 37, 40, 42, 43, 253, 255],
    ids=lambda t: f"type{t}",
)
def test_rfc7915_4_2_types_without_counterpart_dropped(icmp_type: int) -> None:
    """Source quench, redirect, alternate host, router adv/solicit, timestamp, information,
    address mask, traceroute, ... : silently drop (single-hop informational too)."""
    msg = icmp4_raw(icmp_type, 0, bytes(4), QUOTED_V4 if icmp_type in (4, 5) else bytes(12))
    frame = lan_frame(IP(src=LAN_IP, dst=SVC_IP, proto=1) / Raw(msg))
    assert drop_only(run(frame, TO_SERVICE)) is DropReason.ICMP_UNTRANSLATABLE


# frag needed -> packet too big: MTU + 20, the 1280 floor, RFC 1191 plateaus for MTU 0
@pytest.mark.parametrize(
    ("mtu", "quoted_total", "expected"),
    [
        (1400, 29, 1420),
        (1500, 29, 1520),
        (9000, 29, 1520),  # min(advertised + 20, IPv6 next-hop MTU, IPv4 next hop + 20)
        (1000, 29, 1280),  # IPv6 minimum MTU floor
        (576, 29, 1280),
        (0, 1500, 1512),  # plateau 1492 < 1500 -> 1492 + 20
        (0, 1492, 1280),  # next plateau below 1492 is 1006 < 1280 -> floor
        (0, 4000, 1520),  # plateau 2002, capped by the service MTU
    ],
)
def test_rfc7915_4_2_fragmentation_needed_to_packet_too_big(
    mtu: int, quoted_total: int, expected: int
) -> None:
    quoted = bytearray(QUOTED_V4)
    quoted[2:4] = quoted_total.to_bytes(2, "big")
    result = run(_v4_error(3, 4, b"\x00\x00" + mtu.to_bytes(2, "big"), bytes(quoted)), TO_SERVICE)
    _v6, msg = _icmp6(only(result, Side.SERVICE))
    assert (msg[0], msg[1]) == (2, 0)
    assert int.from_bytes(msg[4:8], "big") == expected


# ------------------------------------------------------------ §5.2 type/code table, v6 -> v4

_UNREACH_6TO4 = {0: (3, 1), 1: (3, 10), 2: (3, 1), 3: (3, 1), 4: (3, 3)}
_UNREACH_6TO4 |= {5: None, 6: None, 7: None, 8: None, 255: None}


@pytest.mark.parametrize(("code", "expected"), list(_UNREACH_6TO4.items()))
def test_rfc7915_5_2_destination_unreachable_codes(code: int, expected) -> None:
    result = run(_v6_error(1, code), TO_LAN)
    if expected is None:
        assert drop_only(result) is DropReason.ICMP_UNTRANSLATABLE
        return
    v4, msg = _icmp4(only(result, Side.LAN))
    assert (msg[0], msg[1]) == expected
    assert (v4.src, v4.dst) == (SVC_IP, LAN_IP)


@pytest.mark.parametrize(
    ("mtu", "expected"),
    [(1280, 1260), (1420, 1400), (1520, 1500), (9000, 1500), (1300, 1280)],
)
def test_rfc7915_5_2_packet_too_big_to_fragmentation_needed(mtu: int, expected: int) -> None:
    v4, msg = _icmp4(only(run(_v6_error(2, 0, mtu.to_bytes(4, "big")), TO_LAN), Side.LAN))
    assert (msg[0], msg[1]) == (3, 4) and v4.dst == LAN_IP
    assert int.from_bytes(msg[6:8], "big") == expected  # min(MTU - 20, v4 hop, v6 hop - 20)


@pytest.mark.parametrize("code", [0, 1])
def test_rfc7915_5_2_time_exceeded(code: int) -> None:
    _v4, msg = _icmp4(only(run(_v6_error(3, code), TO_LAN), Side.LAN))
    assert (msg[0], msg[1]) == (11, code)


# RFC 7915 Figure 6: IPv6 pointer -> IPv4 pointer (None: n/a, drop)
_FIGURE_6 = {0: 0, 1: 1, 2: None, 3: None, 4: 2, 5: 2, 6: 9, 7: 8}
_FIGURE_6 |= dict.fromkeys(range(8, 24), 12) | dict.fromkeys(range(24, 40), 16)
_FIGURE_6 |= {40: None, 43: None, 0x10000: None}


@pytest.mark.parametrize(("pointer", "expected"), list(_FIGURE_6.items()))
def test_rfc7915_5_2_parameter_problem_pointer_figure_6(pointer: int, expected) -> None:
    result = run(_v6_error(4, 0, pointer.to_bytes(4, "big")), TO_LAN)
    if expected is None:
        assert drop_only(result) is DropReason.ICMP_UNTRANSLATABLE
        return
    _v4, msg = _icmp4(only(result, Side.LAN))
    assert (msg[0], msg[1]) == (12, 0)
    assert msg[4] == expected


def test_rfc7915_5_2_unrecognized_next_header_to_protocol_unreachable() -> None:
    _v4, msg = _icmp4(only(run(_v6_error(4, 1, (6).to_bytes(4, "big")), TO_LAN), Side.LAN))
    assert (msg[0], msg[1]) == (3, 2)


@pytest.mark.parametrize("code", [2, 3, 255])
def test_rfc7915_5_2_parameter_problem_other_codes_dropped(code: int) -> None:
    assert drop_only(run(_v6_error(4, code), TO_LAN)) is DropReason.ICMP_UNTRANSLATABLE


@pytest.mark.parametrize(
    ("icmp_type", "reason"),
    [
        (5, DropReason.ICMP_UNTRANSLATABLE),  # unknown error types: drop
        (100, DropReason.ICMP_UNTRANSLATABLE),
        (127, DropReason.ICMP_UNTRANSLATABLE),
        (130, DropReason.MLD),  # MLD: single-hop, drop
        (131, DropReason.MLD),
        (132, DropReason.MLD),
        (143, DropReason.MLD),
        (133, DropReason.NDP_NO_ARP_EQUIVALENT),  # RS
        (134, DropReason.NDP_NO_ARP_EQUIVALENT),  # RA
        (137, DropReason.NDP_NO_ARP_EQUIVALENT),  # redirect
        (139, DropReason.ICMP_UNTRANSLATABLE),  # node information
        (140, DropReason.ICMP_UNTRANSLATABLE),
        (141, DropReason.ICMP_UNTRANSLATABLE),  # inverse ND
        (144, DropReason.ICMP_UNTRANSLATABLE),  # mobile prefix ...
        (200, DropReason.ICMP_UNTRANSLATABLE),  # private experimentation
        (255, DropReason.ICMP_UNTRANSLATABLE),
    ],
)
def test_rfc7915_5_2_types_without_counterpart_dropped(icmp_type: int, reason: DropReason) -> None:
    frame = _v6_error(icmp_type, 0, bytes(4), bytes(16))
    assert drop_only(run(frame, TO_LAN)) is reason


# ------------------------------------------------------------ §4.3 / §5.3 quoted packets


@pytest.mark.parametrize("proto", ["udp", "tcp", "echo"])
def test_rfc7915_4_3_quoted_packet_translated_with_valid_checksum(proto: str) -> None:
    inner = IP(src=SVC_IP, dst=LAN_IP, ttl=9, tos=0x20)
    if proto == "udp":
        inner = inner / UDP(sport=53, dport=4000) / Raw(b"payload!")
    elif proto == "tcp":
        inner = inner / TCP(sport=80, dport=4000, flags="S")
    else:
        inner = inner / ICMP(type=0, id=5, seq=6) / Raw(b"pong")
    quoted = bytes(inner)
    assert l4_residue_v4(IP(quoted)) == 0
    v6, msg = _icmp6(only(run(_v4_error(3, 3, quoted=quoted), TO_SERVICE), Side.SERVICE))
    assert (msg[0], msg[1]) == (1, 4) and (v6.src, v6.dst) == (LAN_IP6, SVC_IP6)
    q = IPv6(msg[8:])
    assert (q.src, q.dst) == (SVC_IP6, LAN_IP6)
    assert q.hlim == 9 and q.tc == 0x20 and q.plen == len(quoted) - 20
    assert q.nh == {"udp": 17, "tcp": 6, "echo": 58}[proto]
    seg = msg[8 + 40 :]
    assert l4_residue_v6(q, q.nh, seg) == 0, "quoted transport checksum not adjusted"
    if proto == "echo":
        assert seg[0] == 129


@pytest.mark.parametrize("proto", ["udp", "tcp", "echo"])
def test_rfc7915_5_3_quoted_packet_translated_with_valid_checksum(proto: str) -> None:
    inner = IPv6(src=LAN_IP6, dst=SVC_IP6, hlim=9, tc=0x20)
    if proto == "udp":
        inner = inner / UDP(sport=4000, dport=53) / Raw(b"payload!")
    elif proto == "tcp":
        inner = inner / TCP(sport=4000, dport=80, flags="S")
    else:
        inner = inner / ICMPv6EchoRequest(id=5, seq=6, data=b"ping")
    quoted = bytes(inner)
    _v4, msg = _icmp4(only(run(_v6_error(1, 4, quoted=quoted), TO_LAN), Side.LAN))
    assert (msg[0], msg[1]) == (3, 3)
    q = IP(msg[8:])
    assert (q.src, q.dst) == (LAN_IP, SVC_IP)
    assert q.ttl == 9 and q.tos == 0x20 and q.len == len(quoted) - 20
    assert q.proto == {"udp": 17, "tcp": 6, "echo": 1}[proto]
    assert residue(msg[8:28]) == 0, "quoted IPv4 header checksum"
    assert l4_residue_v4(q) == 0, "quoted transport checksum not adjusted"
    if proto == "echo":
        assert msg[28] == 8


def test_rfc7915_4_3_error_quoting_an_error_is_dropped() -> None:
    inner_err = icmp4_raw(3, 1, bytes(4), QUOTED_V4)
    quoted = bytes(IP(src=SVC_IP, dst=LAN_IP, proto=1) / Raw(inner_err))
    assert drop_only(run(_v4_error(3, 1, quoted=quoted), TO_SERVICE)) is (
        DropReason.ICMP_ERROR_IN_ERROR
    )


def test_rfc7915_5_3_error_quoting_an_error_is_dropped() -> None:
    inner_err = icmp6_raw(1, 0, bytes(4), QUOTED_V6, LAN_IP6, SVC_IP6)
    quoted = bytes(IPv6(src=LAN_IP6, dst=SVC_IP6, nh=58) / Raw(inner_err))
    assert drop_only(run(_v6_error(1, 0, quoted=quoted), TO_LAN)) is (
        DropReason.ICMP_ERROR_IN_ERROR
    )


def test_rfc7915_4_3_bad_outer_checksum_dropped() -> None:
    frame = bytearray(_v4_error(3, 1))
    frame[14 + 20 + 2] ^= 0x01
    assert drop_only(run(bytes(frame), TO_SERVICE)) is DropReason.ICMP_BAD_CHECKSUM


def test_rfc7915_4_4_icmpv6_error_capped_at_1280() -> None:
    """RFC 4443 §2.4 (c): the translated error must not exceed the minimum IPv6 MTU."""
    big = bytes(IP(src=SVC_IP, dst=LAN_IP) / UDP(sport=1, dport=2) / Raw(bytes(1272)))
    frame = only(run(_v4_error(11, 0, quoted=big), TO_SERVICE), Side.SERVICE)
    v6, msg = _icmp6(frame)
    assert len(bytes(v6)) == 1280
    assert IPv6(msg[8:]).plen == 1280  # header field still says the original length


def test_rfc7915_5_4_icmpv4_error_capped_at_576() -> None:
    """RFC 1812 §4.3.2.3: an ICMPv4 error is at most 576 bytes."""
    big = bytes(IPv6(src=LAN_IP6, dst=SVC_IP6) / UDP(sport=1, dport=2) / Raw(bytes(1000)))
    frame = only(run(_v6_error(3, 0, quoted=big), TO_LAN), Side.LAN)
    v4, _msg = _icmp4(frame)
    assert v4.len == 576


# ------------------------------------------------------------ RFC 4884 extensions


def _extension() -> bytes:
    """RFC 4884 §7 extension header (version 2) + one object, with a valid checksum."""
    obj = bytes((0, 8, 2, 1)) + b"\xde\xad\xbe\xef"  # length 8, class 2, c-type 1
    header = bytearray(b"\x20\x00\x00\x00")
    csum = 0xFFFF - _sum16(bytes(header) + obj)
    header[2:4] = csum.to_bytes(2, "big")
    return bytes(header) + obj


def _sum16(data: bytes) -> int:
    from xlat_frames import ones_complement_sum

    return ones_complement_sum(data)


def _padded(datagram: bytes, unit: int) -> bytes:
    """RFC 4884 §4.1/§4.5: zero-padded to a multiple of `unit`, and to at least 128."""
    size = max(128, -(-len(datagram) // unit) * unit)
    return datagram + bytes(size - len(datagram))


_LONG_V4 = bytes(IP(src=SVC_IP, dst=LAN_IP, ttl=3) / UDP(sport=53, dport=4000) / bytes(171))
_LONG_V6 = bytes(IPv6(src=LAN_IP6, dst=SVC_IP6, hlim=3) / UDP(sport=4000, dport=53) / bytes(145))


@pytest.mark.parametrize(
    ("original", "words6"),
    [(QUOTED_V4, 16), (_LONG_V4, 28)],  # 29 -> 49 bytes, padded to 128; 199 -> 219 -> 224
    ids=["short", "long"],
)
@pytest.mark.parametrize(("t4", "c4", "t6", "c6"), [(11, 0, 3, 0), (3, 3, 1, 4)])
def test_rfc4884_extension_kept_4to6(
    t4: int, c4: int, t6: int, c6: int, original: bytes, words6: int
) -> None:
    """RFC 7915 §4.2 "ICMP Error Payload" and RFC 4884 §4.1/§4.5: the extension stays, the
    translated original datagram is zero-padded to 64 bits and at least 128 bytes, and the
    ICMPv6 length (byte 4) counts 64-bit words; the ICMPv4 padding is not carried over."""
    field4 = _padded(original, 4)
    rest = bytes((0, len(field4) // 4, 0, 0))  # ICMPv4: length in 32-bit words at byte 5
    ext = _extension()
    msg = icmp4_raw(t4, c4, rest, field4 + ext)
    frame = lan_frame(IP(src=ROUTER_IP, dst=SVC_IP, proto=1) / Raw(msg))
    _v6, out = _icmp6(only(run(frame, TO_SERVICE), Side.SERVICE))
    assert (out[0], out[1]) == (t6, c6)
    assert out[4] == words6
    translated = bytes(IPv6(out[8:][: len(original) + 20]))
    assert len(translated) == len(original) + 20 and IPv6(translated).src == SVC_IP6
    assert out[8 + len(translated) : 8 + words6 * 8] == bytes(words6 * 8 - len(translated))
    assert out[8 + words6 * 8 :] == ext


@pytest.mark.parametrize(
    ("original", "words4"),
    [
        (QUOTED_V6, 32),
        (_LONG_V6, 44),
    ],  # 49 -> 29, padded to 128; 193 (200 with padding) -> 173 -> 176
    ids=["short", "long"],
)
@pytest.mark.parametrize(("t6", "c6", "t4", "c4"), [(3, 0, 11, 0), (1, 4, 3, 3)])
def test_rfc4884_extension_kept_6to4(
    t6: int, c6: int, t4: int, c4: int, original: bytes, words4: int
) -> None:
    """RFC 7915 §5.2 and RFC 4884 §4.1/§4.5: ICMPv6 length (byte 4, 64-bit words) in,
    ICMPv4 length (byte 5, 32-bit words) out, the original datagram padded to 32 bits and
    at least 128 bytes, the extension after it."""
    field6 = _padded(original, 8)
    rest = bytes((len(field6) // 8, 0, 0, 0))
    ext = _extension()
    msg = icmp6_raw(t6, c6, rest, field6 + ext, ROUTER_IP6, LAN_IP6)
    frame = svc_frame(IPv6(src=ROUTER_IP6, dst=LAN_IP6, nh=58) / Raw(msg))
    _v4, out = _icmp4(only(run(frame, TO_LAN), Side.LAN))
    assert (out[0], out[1]) == (t4, c4)
    assert out[5] == words4 and out[4] == 0
    size = len(original) - 20
    assert IP(out[8:]).src == LAN_IP and IP(out[8:]).len == size
    assert out[8 + size : 8 + words4 * 4] == bytes(words4 * 4 - size)
    assert out[8 + words4 * 4 :] == ext


def test_rfc4884_extension_dropped_where_the_type_has_no_length_field() -> None:
    """RFC 4884 §4.5: ICMPv6 Packet Too Big and Parameter Problem have no length field, so
    an ICMPv4 extension cannot follow them (RFC 7915 §4.2 maps frag-needed and parameter
    problem to those); the original datagram is kept without padding."""
    field4 = _padded(QUOTED_V4, 4)
    for icmp_type, code, rest in ((3, 4, bytes((0, 32, 5, 0x78))), (12, 0, bytes((0, 32, 0, 0)))):
        msg = icmp4_raw(icmp_type, code, rest, field4 + _extension())
        frame = lan_frame(IP(src=ROUTER_IP, dst=SVC_IP, proto=1) / Raw(msg))
        _v6, out = _icmp6(only(run(frame, TO_SERVICE), Side.SERVICE))
        assert len(out) == 8 + len(QUOTED_V4) + 20


def test_rfc4884_no_extension_length_zero() -> None:
    _v6, out = _icmp6(only(run(_v4_error(11, 0), TO_SERVICE), Side.SERVICE))
    assert out[4] == 0
    _v4, out = _icmp4(only(run(_v6_error(3, 0), TO_LAN), Side.LAN))
    assert out[5] == 0


# ------------------------------------------------------------ fragments and ICMP


def test_rfc7915_4_1_fragmented_icmp_dropped() -> None:
    pkt = IP(src=LAN_IP, dst=SVC_IP, flags="MF", proto=1) / Raw(bytes(ICMP(type=8)) + bytes(16))
    assert drop_only(run(lan_frame(pkt), TO_SERVICE)) is DropReason.ICMP_FRAGMENTED


def test_icmp_errors_keep_the_icmpv4_checksum_of_quoted_echo() -> None:
    """Checksums of quoted echo messages are recomputed/adjusted for the other family."""
    inner = bytes(IP(src=SVC_IP, dst=LAN_IP) / ICMP(type=8, id=1, seq=1) / Raw(b"x" * 20))
    _v6, msg = _icmp6(only(run(_v4_error(11, 0, quoted=inner), TO_SERVICE), Side.SERVICE))
    q = IPv6(msg[8:])
    assert msg[48] == 128
    assert l4_residue_v6(q, 58, msg[48:]) == 0


# ------------------------------------------------------------ atomic fragments (RFC 6946)


def _atomic(l3_payload, **frag: object) -> bytes:
    frag.setdefault("id", 0xCAFE0042)
    return svc_frame(
        IPv6(src=SVC_IP6, dst=LAN_IP6, nh=44)
        / IPv6ExtHdrFragment(offset=0, m=0, nh=58, **frag)
        / l3_payload
    )


def test_rfc6946_icmpv6_echo_in_atomic_fragment_is_translated() -> None:
    """RFC 6946 §4: an atomic fragment is processed as a whole packet, so its ICMPv6 is
    complete and its checksum can be rebuilt; RFC 7915 §5.1.1 takes the ID from it."""
    echo = ICMPv6EchoRequest(id=0x1234, seq=7, data=b"atomic-ping")
    frame = _atomic(Raw(bytes(IPv6(src=SVC_IP6, dst=LAN_IP6) / echo)[40:]))
    v4, msg = _icmp4(only(run(frame, TO_LAN), Side.LAN))
    assert (msg[0], msg[1]) == (8, 0) and msg[8:] == b"atomic-ping"
    assert v4.id == 0x0042 and v4.flags == 0 and v4.frag == 0


def test_rfc6946_icmpv6_error_in_atomic_fragment_is_translated() -> None:
    msg = icmp6_raw(1, 4, bytes(4), QUOTED_V6, SVC_IP6, LAN_IP6)
    _v4, out = _icmp4(only(run(_atomic(Raw(msg)), TO_LAN), Side.LAN))
    assert (out[0], out[1]) == (3, 3) and IP(out[8:]).src == LAN_IP


def test_real_icmpv6_fragment_is_still_dropped() -> None:
    """RFC 7915 §1.2: fragmented ICMP is not translated (the checksum spans fragments)."""
    echo = bytes(ICMPv6EchoRequest(id=1, seq=1, data=bytes(64)))
    frame = svc_frame(
        IPv6(src=SVC_IP6, dst=LAN_IP6) / IPv6ExtHdrFragment(offset=0, m=1, nh=58) / Raw(echo)
    )
    assert drop_only(run(frame, TO_LAN)) is DropReason.ICMP_FRAGMENTED


def test_rfc6980_5_ndp_in_atomic_fragment_is_invalid() -> None:
    """RFC 6980 §5: NDP in a packet with a Fragment header is ignored, atomic or not."""
    ns = bytes(IPv6(src=SVC_IP6, dst=LAN_IP6) / ICMPv6ND_NS(tgt=LAN_IP6))[40:]
    frame = svc_frame(
        IPv6(src=SVC_IP6, dst=LAN_IP6, hlim=255) / IPv6ExtHdrFragment(nh=58) / Raw(ns)
    )
    assert drop_only(run(frame, TO_LAN)) is DropReason.NDP_INVALID


# ------------------------------------------------------------ "illegal" error sources


@pytest.mark.parametrize(
    ("src", "src6"),
    [("127.0.0.1", "fe80::7f00:1"), ("127.9.8.7", "fe80::7f09:807"), (NO_IP, "fe80::")],
)
def test_rfc7915_4_1_icmpv4_error_from_illegal_source_is_translated(src: str, src6: str) -> None:
    """RFC 7915 §4.1 Source Address: packets from illegal sources (0.0.0.0, 127.0.0.1) are
    dropped, but "when translating ICMPv4 Error Messages into ICMPv6, the 'illegal' source
    address will be translated for the purpose of trouble shooting"."""
    msg = icmp4_raw(3, 3, bytes(4), QUOTED_V4)
    frame = lan_frame(IP(src=src, dst=SVC_IP, proto=1) / Raw(msg))
    v6, out = _icmp6(only(run(frame, TO_SERVICE), Side.SERVICE))
    assert v6.src == src6 and v6.dst == SVC_IP6 and (out[0], out[1]) == (1, 4)


@pytest.mark.parametrize(
    ("src", "payload"),
    [
        ("127.0.0.1", ICMP(type=8) / Raw(b"x")),  # not an error
        ("127.0.0.1", UDP(sport=1, dport=2)),
        ("224.0.0.1", None),  # a multicast or broadcast source never names a sender
        ("255.255.255.255", None),
    ],
    ids=["echo-from-loopback", "udp-from-loopback", "error-from-multicast", "error-from-bcast"],
)
def test_rfc7915_4_1_other_illegal_sources_still_dropped(src: str, payload) -> None:
    if payload is None:
        payload = Raw(icmp4_raw(3, 3, bytes(4), QUOTED_V4))
    frame = lan_frame(IP(src=src, dst=SVC_IP, proto=1 if payload.name != "UDP" else 17) / payload)
    assert drop_only(run(frame, TO_SERVICE)) is DropReason.ADDRESS_NOT_TRANSLATABLE


def test_rfc4884_extension_too_big_for_the_icmpv4_error_is_dropped_whole() -> None:
    """RFC 7915 §5.2 keeps extensions, but an ICMPv4 error is capped at 576 bytes
    (RFC 1812 §4.3.2.3) and needs 128 bytes of original datagram (RFC 4884 §4.1): an
    extension that leaves less room is dropped whole (a cut one would fail its own RFC 4884
    §7 checksum), the length is 0, and the error itself still crosses."""
    obj = bytes((0x01, 0xCC, 2, 1)) + bytes(0x1CC - 4)  # one 460-byte object
    header = bytearray(b"\x20\x00\x00\x00")
    header[2:4] = (0xFFFF - _sum16(bytes(header) + obj)).to_bytes(2, "big")
    ext = bytes(header) + obj
    field6 = QUOTED_V6 + bytes(128 - len(QUOTED_V6))
    msg = icmp6_raw(3, 0, bytes((16, 0, 0, 0)), field6 + ext, ROUTER_IP6, LAN_IP6)
    frame = svc_frame(IPv6(src=ROUTER_IP6, dst=LAN_IP6, nh=58) / Raw(msg))
    v4, out = _icmp4(only(run(frame, TO_LAN), Side.LAN))
    assert (out[0], out[1], out[5]) == (11, 0, 0)
    assert out[8:] == bytes(IP(out[8:]))[: len(QUOTED_V6) - 20] and v4.len == 28 + 29
