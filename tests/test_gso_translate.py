"""GSO super-frames through gateway/xlat/gso.py, held against the reference translator.

The property: cutting the translated super-frame into segments (what the kernel's GSO
does on output, emulated by gso_segment.py) gives the same frames as cutting first and
translating each segment with the reference translator -- exactly for IPv4 -> IPv6, and
modulo the IPv4 ID and the last segment's DF bit for IPv6 -> IPv4 (gso.py's docstring).
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from xlat_frames import assert_checksums

from cjb.common.packet.checksum import internet_checksum, ones_sum
from cjb.gateway.xlat import Direction, Side, Translator, XlatConfig
from cjb.gateway.xlat.gso import (
    F_NEEDS_CSUM,
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP_L4,
    NO_VNET,
    VNET,
    GsoDrop,
    VnetResult,
    VnetTranslator,
    pseudo_sum,
)
from cjb.gateway.xlat.gso_segment import complete_checksum, segment

MACS = bytes.fromhex("020000000002") + bytes.fromhex("020000000001")
FE80 = b"\xfe\x80" + bytes(10)
CLIENT, SERVICE = bytes((192, 168, 0, 10)), bytes((192, 168, 0, 100))


def tcp_header(seq: int, flags: int, options: bytes = b"") -> bytes:
    doff = (20 + len(options)) // 4
    return struct.pack("!HHIIBBHHH", 40000, 80, seq, 7, doff << 4, flags, 512, 0, 0) + options


def v4_super(
    payload: bytes,
    *,
    l4: bytes,
    proto: int = 6,
    df: bool = True,
    ident: int = 0x1234,
    tos: int = 0,
    ttl: int = 64,
    src: bytes = CLIENT,
    dst: bytes = SERVICE,
) -> bytes:
    """An IPv4 super-frame as the kernel hands it over: L4 checksum = pseudo-header sum."""
    if proto == 17:
        l4 = l4[:4] + struct.pack("!HH", 8 + len(payload), 0)
    total = 20 + len(l4) + len(payload)
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, tos, total, ident, 0x4000 if df else 0, ttl, proto, 0, src, dst
    )
    ip = ip[:10] + internet_checksum(ip).to_bytes(2, "big") + ip[12:]
    c = 16 if proto == 6 else 6
    check = pseudo_sum(src + dst, total - 20, proto, v6=False)
    l4 = l4[:c] + check.to_bytes(2, "big") + l4[c + 2 :]
    return bytes(MACS + b"\x08\x00" + ip + l4 + payload)


def v6_super(payload: bytes, *, l4: bytes, proto: int = 6, tc: int = 0, hlim: int = 64) -> bytes:
    if proto == 17:
        l4 = l4[:4] + struct.pack("!HH", 8 + len(payload), 0)
    plen = len(l4) + len(payload)
    ip = struct.pack("!IHBB", 0x60000000 | tc << 20 | 0xABCDE, plen, proto, hlim)
    ip += FE80 + SERVICE + FE80 + CLIENT
    c = 16 if proto == 6 else 6
    check = pseudo_sum(SERVICE + CLIENT, plen, proto, v6=True)
    l4 = l4[:c] + check.to_bytes(2, "big") + l4[c + 2 :]
    return bytes(MACS + b"\x86\xdd" + ip + l4 + payload)


def vnet(gso_type: int, gso_size: int, l4_start: int, proto: int = 6) -> bytes:
    offset = 16 if proto == 6 else 6
    return bytes(VNET.pack(F_NEEDS_CSUM, gso_type, l4_start + 20, gso_size, l4_start, offset))


def wire(result: VnetResult) -> list[tuple[Side, bytes]]:
    """What leaves the wire: vnet emits cut by the (emulated) kernel."""
    frames: list[tuple[Side, bytes]] = []
    for emit in result.emits:
        frame = b"".join(bytes(p) for p in emit.frame)
        if emit.vnet == NO_VNET:
            frames.append((emit.side, frame))
            continue
        flags, gso_type, _h, gso_size, cs, co = VNET.unpack(emit.vnet)
        assert flags == F_NEEDS_CSUM
        if gso_type == GSO_NONE:
            frames.append((emit.side, complete_checksum(frame, cs, co)))
        else:
            frames += [
                (emit.side, s) for s in segment(frame, gso_type & ~GSO_ECN, gso_size, cs, co)
            ]
    return frames


def reference(frames: list[bytes], direction: Direction) -> list[tuple[Side, bytes]]:
    ref = Translator(XlatConfig())
    out: list[tuple[Side, bytes]] = []
    for f in frames:
        out += [(e.side, e.frame) for e in ref.translate(f, direction).emits]
    return out


def normalize_v4(frames: list[tuple[Side, bytes]]) -> list[tuple[Side, bytes]]:
    """IPv4 ID and flags zeroed, header checksum recomputed (see the module docstring)."""
    out = []
    for side, f in frames:
        if f[12:14] == b"\x08\x00":
            ip = f[14:18] + bytes(4) + f[22:24] + b"\0\0" + f[26:34]
            ip = ip[:10] + internet_checksum(ip).to_bytes(2, "big") + ip[12:]
            f = f[:14] + ip + f[34:]
        out.append((side, f))
    return out


# -- table vectors -----------------------------------------------------------------------


def test_tcp_superframe_to_service_is_translated_once() -> None:
    payload = bytes(range(256)) * 40  # 10240 bytes, 8 segments of 1448 (last shorter)
    frame = v4_super(payload, l4=tcp_header(1000, 0x18))
    xl = VnetTranslator(Translator(XlatConfig()))
    result = xl.translate(vnet(GSO_TCPV4, 1448, 34), frame, Direction.TO_SERVICE)
    assert result.drop is None and len(result.emits) == 1
    emit = result.emits[0]
    flags, gso_type, hdr_len, gso_size, cs, co = VNET.unpack(emit.vnet)
    # TCPV4 -> TCPV6, csum_start and hdr_len +20 (RFC 7915 §4.1: a 20-byte longer header)
    assert (flags, gso_type, hdr_len, gso_size, cs, co) == (
        F_NEEDS_CSUM,
        GSO_TCPV6,
        74,
        1448,
        54,
        16,
    )
    out = b"".join(bytes(p) for p in emit.frame)
    assert len(out) == len(frame) + 20
    assert (
        out[12:14] == b"\x86\xdd" and out[22:38] == FE80 + CLIENT and out[38:54] == FE80 + SERVICE
    )
    assert int.from_bytes(out[18:20], "big") == 20 + len(payload)  # payload length
    # NEEDS_CSUM: the field holds the IPv6 pseudo-header sum, not a checksum
    assert out[70:72] == pseudo_sum(CLIENT + SERVICE, 20 + len(payload), 6, v6=True).to_bytes(
        2, "big"
    )
    assert out[74:] == payload
    assert xl.counters.superframes[Direction.TO_SERVICE] == 1
    assert xl.counters.segments[Direction.TO_SERVICE] == 8


def test_tcp_superframe_to_lan_reserves_one_id_per_segment() -> None:
    # MSS 1000: segments of 1040 bytes in IPv4, below 1260, so DF is clear and IDs needed
    payload = bytes(3500)
    frame = v6_super(payload, l4=tcp_header(5, 0x10))
    ref = Translator(XlatConfig(), first_ipv4_id=100)
    xl = VnetTranslator(ref)
    result = xl.translate(vnet(GSO_TCPV6 | GSO_ECN, 1000, 54), frame, Direction.TO_LAN)
    (emit,) = result.emits
    _f, gso_type, hdr_len, _g, cs, _c = VNET.unpack(emit.vnet)
    assert (gso_type, hdr_len, cs) == (GSO_TCPV4 | GSO_ECN, 54, 34)
    out = b"".join(bytes(p) for p in emit.frame)
    assert out[18:22] == b"\x00\x64\x00\x00"  # ID 100, DF clear
    segs = segment(out, GSO_TCPV4, 1000, 34, 16)
    assert [int.from_bytes(s[18:20], "big") for s in segs] == [100, 101, 102, 103]
    assert ref._ids.next() == 104  # the kernel used 100..103


def test_plain_frames_go_to_the_reference_unchanged() -> None:
    frame = complete_checksum(v4_super(b"hello", l4=tcp_header(1, 0x18)), 34, 16)
    xl = VnetTranslator(Translator(XlatConfig()))
    result = xl.translate(NO_VNET, frame, Direction.TO_SERVICE)
    assert wire(result) == reference([frame], Direction.TO_SERVICE)
    assert result.emits[0].vnet == NO_VNET
    assert xl.reference.counters.frames_in[Direction.TO_SERVICE] == 1


def test_partial_udp_single_frame() -> None:
    frame = v4_super(b"x" * 100, l4=bytes(8), proto=17)
    xl = VnetTranslator(Translator(XlatConfig()))
    result = xl.translate(vnet(GSO_NONE, 0, 34, 17), frame, Direction.TO_SERVICE)
    assert xl.counters.partial[Direction.TO_SERVICE] == 1
    assert wire(result) == reference([complete_checksum(frame, 34, 6)], Direction.TO_SERVICE)


def test_ipv4_options_fall_back_to_software_segments() -> None:
    payload = bytes(range(200)) * 20
    frame = v4_super(payload, l4=tcp_header(1, 0x18))
    # insert a 4-byte NOP/EOL option block: IHL 6, so csum_start 38
    ip = bytearray(frame[14:34])
    ip[0] = 0x46
    ip[2:4] = (int.from_bytes(ip[2:4], "big") + 4).to_bytes(2, "big")
    ip[10:12] = b"\0\0"
    opts = b"\x01\x01\x01\x00"
    ip[10:12] = internet_checksum(bytes(ip) + opts).to_bytes(2, "big")
    frame = frame[:14] + bytes(ip) + opts + frame[34:]
    xl = VnetTranslator(Translator(XlatConfig()))
    result = xl.translate(vnet(GSO_TCPV4, 1000, 38), frame, Direction.TO_SERVICE)
    assert xl.counters.software_segmented[Direction.TO_SERVICE] == 1
    expected = reference(segment(frame, GSO_TCPV4, 1000, 38, 16), Direction.TO_SERVICE)
    assert wire(result) == expected and len(expected) == 4


def test_segments_above_the_mtu_get_the_reference_answer() -> None:
    # MSS 1480 + 20 TCP + 40 IPv6 = 1540 > service MTU 1520, DF set: Packet Too Big per segment
    frame = v4_super(bytes(3000), l4=tcp_header(1, 0x10))
    xl = VnetTranslator(Translator(XlatConfig()))
    result = xl.translate(vnet(GSO_TCPV4, 1480, 34), frame, Direction.TO_SERVICE)
    assert result.drop == "too-big"
    out = wire(result)
    assert out == reference(segment(frame, GSO_TCPV4, 1480, 34, 16), Direction.TO_SERVICE)
    # two full segments answered with an ICMP error, the short last one translated
    assert [side for side, _ in out] == [Side.LAN, Side.LAN, Side.SERVICE]


def test_bad_vnet_headers_are_counted_drops() -> None:
    frame = v4_super(bytes(100), l4=tcp_header(1, 0x10))
    xl = VnetTranslator(Translator(XlatConfig()))
    cases = [
        (b"\x01", GsoDrop.BAD_VNET_HEADER),
        (VNET.pack(0, GSO_TCPV4, 0, 1000, 34, 16), GsoDrop.GSO_WITHOUT_CSUM),
        (VNET.pack(F_NEEDS_CSUM, 9, 0, 1000, 34, 16), GsoDrop.BAD_VNET_HEADER),
        (VNET.pack(F_NEEDS_CSUM, GSO_TCPV4, 0, 0, 34, 16), GsoDrop.BAD_VNET_HEADER),
        (VNET.pack(F_NEEDS_CSUM, GSO_NONE, 0, 0, 5000, 16), GsoDrop.BAD_VNET_HEADER),
        (VNET.pack(F_NEEDS_CSUM, GSO_TCPV4, 0, 1000, 20, 16), GsoDrop.GSO_MALFORMED),
    ]
    for header, reason in cases:
        assert xl.translate(header, frame, Direction.TO_SERVICE) == VnetResult(drop=reason.value)
    assert sum(xl.counters.drops.values()) == len(cases)


# -- properties ----------------------------------------------------------------------------

unicast = st.tuples(
    st.integers(1, 223).filter(lambda a: a != 127),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(1, 254),
).map(bytes)
tcp_options = st.integers(0, 10).map(lambda n: b"\x01" * (4 * n))


@settings(max_examples=150, deadline=None)
@given(
    payload=st.binary(max_size=6000),
    mss=st.integers(64, 1500),
    options=tcp_options,
    flags=st.integers(0, 255),
    seq=st.integers(0, 2**32 - 1),
    src=unicast,
    dst=unicast,
    tos=st.integers(0, 255),
    df=st.booleans(),
    udp=st.booleans(),
)
def test_superframe_to_service_equals_reference_per_segment(
    payload: bytes,
    mss: int,
    options: bytes,
    flags: int,
    seq: int,
    src: bytes,
    dst: bytes,
    tos: int,
    df: bool,
    udp: bool,
) -> None:
    proto = 17 if udp else 6
    l4 = struct.pack("!HHHH", 1234, 5678, 0, 0) if udp else tcp_header(seq, flags, options)
    frame = v4_super(payload, l4=l4, proto=proto, df=df, tos=tos, src=src, dst=dst)
    gso_type = GSO_UDP_L4 if udp else GSO_TCPV4
    header = VNET.pack(F_NEEDS_CSUM, gso_type, 0, mss, 34, 6 if udp else 16)
    xl = VnetTranslator(Translator(XlatConfig()))
    result = xl.translate(header, frame, Direction.TO_SERVICE)
    segments = segment(frame, gso_type, mss, 34, 6 if udp else 16)
    got = wire(result)
    assert got == reference(segments, Direction.TO_SERVICE)
    for _, f in got:  # every segment verifies (independent RFC 1071 checker)
        assert_checksums(f)
    one_pass = 40 + len(l4) + mss <= 1520  # every segment fits the service link
    assert xl.counters.superframes[Direction.TO_SERVICE] == one_pass


@settings(max_examples=150, deadline=None)
@given(
    payload=st.binary(max_size=6000),
    mss=st.integers(64, 1500),
    options=tcp_options,
    flags=st.integers(0, 255),
    seq=st.integers(0, 2**32 - 1),
    tc=st.integers(0, 255),
    udp=st.booleans(),
)
def test_superframe_to_lan_equals_reference_per_segment(
    payload: bytes, mss: int, options: bytes, flags: int, seq: int, tc: int, udp: bool
) -> None:
    proto = 17 if udp else 6
    l4 = struct.pack("!HHHH", 1234, 5678, 0, 0) if udp else tcp_header(seq, flags, options)
    frame = v6_super(payload, l4=l4, proto=proto, tc=tc)
    gso_type = GSO_UDP_L4 if udp else GSO_TCPV6
    header = VNET.pack(F_NEEDS_CSUM, gso_type, 0, mss, 54, 6 if udp else 16)
    xl = VnetTranslator(Translator(XlatConfig()))
    result = xl.translate(header, frame, Direction.TO_LAN)
    assert xl.counters.superframes[Direction.TO_LAN] == (20 + len(l4) + mss <= 1500)
    got = wire(result)
    segments = segment(frame, gso_type, mss, 54, 6 if udp else 16)
    expected = reference(segments, Direction.TO_LAN)
    assert normalize_v4(got) == normalize_v4(expected)
    # DF as the reference sets it on every full-size segment; IDs distinct when DF is clear
    v4 = [f for _, f in got if f[12:14] == b"\x08\x00"]
    ref_v4 = [f for _, f in expected if f[12:14] == b"\x08\x00"]
    assert [f[20] & 0x40 for f in v4[:-1]] == [f[20] & 0x40 for f in ref_v4[:-1]]
    ids = [f[18:20] for f in v4 if not f[20] & 0x40]
    assert len(set(ids)) == len(ids)
    for _, f in got:  # every segment verifies (independent RFC 1071 checker)
        assert_checksums(f)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200), fields=st.tuples(*[st.integers(0, 0xFFFF)] * 6))
def test_any_bytes_any_header_never_raise(data: bytes, fields: tuple[int, ...]) -> None:
    flags, gso_type = fields[0] & 0xFF, fields[1] & 0xFF
    header = VNET.pack(flags, gso_type, *fields[2:])
    for direction in Direction:
        result = VnetTranslator(Translator(XlatConfig())).translate(header, data, direction)
        assert isinstance(result, VnetResult)


def test_completing_a_partial_checksum_ignores_ethernet_padding() -> None:
    frame = v4_super(b"", l4=bytes(8), proto=17)  # 42 bytes: a sender pads it to 60
    done = complete_checksum(frame, 34, 6)
    assert complete_checksum(frame + bytes(18), 34, 6) == done + bytes(18)
    assert (ones_sum(done[26:34]) + 17 + 8 + ones_sum(done[34:])) % 0xFFFF == 0


def test_partial_mdns_goes_through_the_reference_and_its_alg() -> None:
    # The service host's mDNS leaves its link with a partial checksum in packet-vnet mode:
    # the discovery ALG (in the reference) must still see it, with a finished checksum.
    udp = struct.pack("!HHHH", 5353, 5353, 0, 0)
    frame = v6_super(b"\x00" * 12, l4=udp, proto=17)
    xl = VnetTranslator(Translator(XlatConfig()))
    result = xl.translate(vnet(GSO_NONE, 0, 54, 17), frame, Direction.TO_LAN)
    assert xl.counters.checksum_completed[Direction.TO_LAN] == 1
    assert xl.counters.partial[Direction.TO_LAN] == 0
    expected = Translator(XlatConfig()).translate(complete_checksum(frame, 54, 6), Direction.TO_LAN)
    assert wire(result) == [(e.side, e.frame) for e in expected.emits]
    assert result.drop == (expected.drop.value if expected.drop else None)
