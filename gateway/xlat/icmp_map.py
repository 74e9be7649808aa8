"""ICMPv4 <-> ICMPv6 (RFC 7915 §4.2 and §5.2), including the packet quoted in an error.

The quoted packet is translated one level deep (RFC 7915 §4.3, §5.3), with its transport
checksum adjusted; an error quoting an error is dropped. RFC 4884 extensions keep their
place after the (re-padded) quoted packet.
"""

from __future__ import annotations

from cjb.common.packet import icmp as I
from cjb.common.packet.checksum import adjust, ones_sum, pseudo_header_sum_v6, verify
from cjb.common.packet.errors import Invalid
from cjb.common.packet.ipv4 import (
    FLAG_DF,
    FLAG_MF,
    PROTO_ICMP,
    PROTO_UDP,
    build_ipv4,
    parse_ipv4,
)
from cjb.common.packet.ipv6 import (
    NH_FRAGMENT,
    NH_ICMPV6,
    build_fragment,
    build_ipv6,
    parse_ipv6,
    walk_extensions,
)
from cjb.common.packet.transport import CHECKSUM_OFFSET
from cjb.common.tunnel_mtu import IPV6_HEADER_GROWTH, service_mtu_for
from cjb.gateway.xlat.addressing import any_v4_to_v6, any_v6_to_v4
from cjb.gateway.xlat.config import IPV6_MIN_MTU, XlatConfig
from cjb.gateway.xlat.result import DropReason

MAX_ICMPV6_ERROR_PACKET = 1280  # RFC 4443 §2.4(c): the error must fit the minimum MTU
MAX_ICMPV4_ERROR_PACKET = 576  # RFC 1812 §4.3.2.3
RFC4884_MIN_ORIGINAL = 128  # RFC 4884 §4.1: the original datagram field is padded to 128
DF_THRESHOLD = 1260  # RFC 7915 §5.1: DF is set on translated packets larger than this

# RFC 1191 §7 plateau table, for an ICMPv4 "fragmentation needed" with MTU 0.
_PLATEAUS = (65535, 32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68)

# RFC 7915 §4.2, ICMPv4 Destination Unreachable code -> (ICMPv6 type, code)
_UNREACH_4TO6: dict[int, tuple[int, int]] = {
    0: (I.V6_DEST_UNREACHABLE, 0),
    1: (I.V6_DEST_UNREACHABLE, 0),
    2: (I.V6_PARAMETER_PROBLEM, 1),  # protocol unreachable; pointer -> next header (6)
    3: (I.V6_DEST_UNREACHABLE, 4),
    4: (I.V6_PACKET_TOO_BIG, 0),
    5: (I.V6_DEST_UNREACHABLE, 0),
    6: (I.V6_DEST_UNREACHABLE, 0),
    7: (I.V6_DEST_UNREACHABLE, 0),
    8: (I.V6_DEST_UNREACHABLE, 0),
    9: (I.V6_DEST_UNREACHABLE, 1),
    10: (I.V6_DEST_UNREACHABLE, 1),
    11: (I.V6_DEST_UNREACHABLE, 0),
    12: (I.V6_DEST_UNREACHABLE, 0),
    13: (I.V6_DEST_UNREACHABLE, 1),
    15: (I.V6_DEST_UNREACHABLE, 1),
}
# RFC 7915 §5.2, ICMPv6 Destination Unreachable code -> ICMPv4 code (type 3)
_UNREACH_6TO4 = {0: 1, 1: 10, 2: 1, 3: 1, 4: 3}
# RFC 7915 §4.2 Figure 3: IPv4 header byte -> IPv6 header byte (missing: no counterpart)
_POINTER_4TO6 = (
    {0: 0, 1: 1, 2: 4, 3: 4, 8: 7, 9: 6}
    | dict.fromkeys(range(12, 16), 8)
    | dict.fromkeys(range(16, 20), 24)
)
# RFC 7915 §5.2 Figure 6: IPv6 header byte -> IPv4 header byte
_POINTER_6TO4 = (
    {0: 0, 1: 1, 4: 2, 5: 2, 6: 9, 7: 8}
    | dict.fromkeys(range(8, 24), 12)
    | dict.fromkeys(range(24, 40), 16)
)

_ECHO_4TO6 = {I.V4_ECHO_REQUEST: I.V6_ECHO_REQUEST, I.V4_ECHO_REPLY: I.V6_ECHO_REPLY}
_ECHO_6TO4 = {v6: v4 for v4, v6 in _ECHO_4TO6.items()}


# ---------------------------------------------------------------- echo (informational)


def echo_4to6(msg: bytearray, src6: bytes, dst6: bytes, length: int) -> DropReason | None:
    """Rewrite an ICMPv4 echo in place as ICMPv6. The checksum is adjusted, not recomputed,
    so a corrupt message stays corrupt (RFC 1624); ICMPv6 adds the pseudo-header."""
    new_type = _ECHO_4TO6.get(msg[0])
    if new_type is None:
        return DropReason.ICMP_UNTRANSLATABLE
    old_word = (msg[0] << 8) | msg[1]
    csum = int.from_bytes(msg[2:4], "big")
    added = (new_type << 8 | msg[1]) + pseudo_header_sum_v6(src6, dst6, NH_ICMPV6, length)
    msg[0] = new_type
    msg[2:4] = adjust(csum, old_word, added).to_bytes(2, "big")
    return None


def echo_6to4(msg: bytearray, src6: bytes, dst6: bytes, length: int) -> DropReason | None:
    new_type = _ECHO_6TO4.get(msg[0])
    if new_type is None:
        return DropReason.ICMP_UNTRANSLATABLE
    removed = (msg[0] << 8 | msg[1]) + pseudo_header_sum_v6(src6, dst6, NH_ICMPV6, length)
    csum = int.from_bytes(msg[2:4], "big")
    msg[0] = new_type
    msg[2:4] = adjust(csum, removed, (new_type << 8) | msg[1]).to_bytes(2, "big")
    return None


# ---------------------------------------------------------------- transport checksums


def adjust_transport(
    proto: int, l4: bytearray, old_addrs: bytes, new_addrs: bytes, udp_zero_ok: bool
) -> bool:
    """Fix the TCP/UDP checksum for new pseudo-header addresses; False if UDP zero is refused.

    Other protocols are left alone: they carry no pseudo-header checksum, or (quoted
    packets) the checksum field is not in the bytes we have.
    """
    off = CHECKSUM_OFFSET.get(proto)
    if off is None or len(l4) < off + 2:
        return True
    csum = int.from_bytes(l4[off : off + 2], "big")
    if proto == PROTO_UDP and csum == 0:
        return udp_zero_ok
    new = adjust(csum, ones_sum(old_addrs), ones_sum(new_addrs))
    if proto == PROTO_UDP and new == 0:
        new = 0xFFFF  # RFC 768: a computed zero is sent as all ones
    l4[off : off + 2] = new.to_bytes(2, "big")
    return True


# ---------------------------------------------------------------- RFC 4884 extensions


def _split_extension(body: bytes, length_words: int, unit: int) -> tuple[bytes, bytes]:
    """(quoted datagram, extension structure). A length that does not fit is treated as no
    extension (RFC 4884 §5.3 non-compliant message)."""
    if not length_words:
        return body, b""
    quoted_len = length_words * unit
    if quoted_len < RFC4884_MIN_ORIGINAL or quoted_len > len(body):
        return body, b""
    return body[:quoted_len], body[quoted_len:]


def _join_extension(quoted: bytes, ext: bytes, unit: int, room: int) -> tuple[bytes, int]:
    """Lay out quoted datagram + extension within `room` bytes; returns (body, length field).

    RFC 4884 §4.1, §4.5: with an extension, the original datagram field is zero-padded to
    a multiple of `unit` (4 for ICMPv4, 8 for ICMPv6) and to at least 128 bytes, and the
    length field counts it in those units; without one, the length is 0 and no padding.
    """
    if ext and room - len(ext) >= RFC4884_MIN_ORIGINAL:
        space = (room - len(ext)) // unit * unit
        q = quoted[:space]
        padded_len = max(RFC4884_MIN_ORIGINAL, -(-len(q) // unit) * unit)
        q = q + bytes(padded_len - len(q))
        return q + ext, padded_len // unit
    return quoted[:room], 0  # no extension, or no room for it: drop it


# ---------------------------------------------------------------- quoted packets


def quote_4to6(quoted: bytes) -> bytes | DropReason:
    """Translate the IPv4 packet inside an ICMPv4 error into IPv6 (RFC 7915 §4.3)."""
    ip = parse_ipv4(quoted, quoted=True)
    if isinstance(ip, Invalid):
        return DropReason.MALFORMED
    src6 = any_v4_to_v6(ip.src)
    dst6 = any_v4_to_v6(ip.dst)
    if src6 is None or dst6 is None:
        return DropReason.ADDRESS_NOT_TRANSLATABLE
    # Up to the quoted packet's own length only: bytes after it are RFC 4884 padding,
    # which the other family's padding replaces (_join_extension).
    l4 = bytearray(quoted[ip.ihl : ip.total_length])
    upper_len = ip.total_length - ip.ihl
    next_header = NH_ICMPV6 if ip.protocol == PROTO_ICMP else ip.protocol
    if ip.fragment_offset == 0:
        if ip.protocol == PROTO_ICMP and len(l4) >= 4:
            if l4[0] in I.V4_ERROR_TYPES:
                return DropReason.ICMP_ERROR_IN_ERROR
            if echo_4to6(l4, src6, dst6, upper_len) is not None:
                return DropReason.ICMP_UNTRANSLATABLE
        else:
            adjust_transport(ip.protocol, l4, ip.src + ip.dst, src6 + dst6, udp_zero_ok=True)
    if ip.is_fragment:
        header = build_ipv6(
            traffic_class=ip.tos,
            payload_length=upper_len + 8,
            next_header=NH_FRAGMENT,
            hop_limit=ip.ttl,
            src=src6,
            dst=dst6,
        ) + build_fragment(next_header, ip.fragment_offset, ip.more_fragments, ip.identification)
    else:
        header = build_ipv6(
            traffic_class=ip.tos,
            payload_length=upper_len,
            next_header=next_header,
            hop_limit=ip.ttl,
            src=src6,
            dst=dst6,
        )
    return header + bytes(l4)


def quote_6to4(quoted: bytes) -> bytes | DropReason:
    """Translate the IPv6 packet inside an ICMPv6 error into IPv4 (RFC 7915 §5.3)."""
    ip = parse_ipv6(quoted, quoted=True)
    if isinstance(ip, Invalid):
        return DropReason.MALFORMED
    src4 = any_v6_to_v4(ip.src)
    dst4 = any_v6_to_v4(ip.dst)
    if src4 is None or dst4 is None:
        return DropReason.ADDRESS_NOT_TRANSLATABLE
    chain = walk_extensions(quoted, ip.next_header, len(quoted))
    if isinstance(chain, Invalid):
        return DropReason.MALFORMED
    upper_len = ip.payload_length - (chain.upper_offset - 40)
    if upper_len < 0:
        return DropReason.MALFORMED  # extension headers longer than the payload length
    l4 = bytearray(quoted[chain.upper_offset : 40 + ip.payload_length])  # no RFC 4884 padding
    total = 20 + upper_len
    protocol = PROTO_ICMP if chain.upper_layer == NH_ICMPV6 else chain.upper_layer
    frag = chain.fragment
    if frag is not None:
        ident = frag.identification & 0xFFFF
        flags_offset = frag.offset | (FLAG_MF if frag.more else 0)
    else:
        ident = 0
        flags_offset = FLAG_DF if total > DF_THRESHOLD else 0
    if frag is None or frag.offset == 0:
        if chain.upper_layer == NH_ICMPV6 and len(l4) >= 4:
            if I.is_v6_error(l4[0]):
                return DropReason.ICMP_ERROR_IN_ERROR
            if echo_6to4(l4, ip.src, ip.dst, upper_len) is not None:
                return DropReason.ICMP_UNTRANSLATABLE
        else:
            adjust_transport(protocol, l4, ip.src + ip.dst, src4 + dst4, udp_zero_ok=True)
    header = build_ipv4(
        tos=ip.traffic_class,
        total_length=total,
        identification=ident,
        flags_offset=flags_offset,
        ttl=ip.hop_limit,
        protocol=protocol,
        src=src4,
        dst=dst4,
    )
    return header + bytes(l4)


# ---------------------------------------------------------------- whole messages


def _plateau_below(total_length: int) -> int:
    for p in _PLATEAUS:
        if p < total_length and p >= IPV6_MIN_MTU - 20:
            return p
    return IPV6_MIN_MTU - 20


def icmp_4to6(msg: bytes, src6: bytes, dst6: bytes, cfg: XlatConfig) -> bytes | DropReason:
    """A whole ICMPv4 message (from an unfragmented packet) as ICMPv6, checksum included."""
    if len(msg) < I.ICMP_HEADER_LEN:
        return DropReason.TRUNCATED
    icmp_type, code = msg[0], msg[1]
    if icmp_type in _ECHO_4TO6:
        echo = bytearray(msg)
        echo_4to6(echo, src6, dst6, len(echo))
        return bytes(echo)
    if icmp_type not in (I.V4_DEST_UNREACHABLE, I.V4_TIME_EXCEEDED, I.V4_PARAMETER_PROBLEM):
        return DropReason.ICMP_UNTRANSLATABLE  # informational without counterpart, redirect, quench
    if not verify(msg):
        return DropReason.ICMP_BAD_CHECKSUM

    rest = b"\x00\x00\x00\x00"
    length_field_allowed = True
    if icmp_type == I.V4_DEST_UNREACHABLE:
        mapped = _UNREACH_4TO6.get(code)
        if mapped is None:
            return DropReason.ICMP_UNTRANSLATABLE
        new_type, new_code = mapped
        if new_type == I.V6_PARAMETER_PROBLEM:
            rest = (6).to_bytes(4, "big")  # points at the IPv6 Next Header field
            length_field_allowed = False
        elif new_type == I.V6_PACKET_TOO_BIG:
            length_field_allowed = False
    elif icmp_type == I.V4_TIME_EXCEEDED:
        new_type, new_code = I.V6_TIME_EXCEEDED, code
    else:
        if code not in (0, 2):
            return DropReason.ICMP_UNTRANSLATABLE
        pointer = _POINTER_4TO6.get(msg[4])
        if pointer is None:
            return DropReason.ICMP_UNTRANSLATABLE
        new_type, new_code = I.V6_PARAMETER_PROBLEM, 0
        rest = pointer.to_bytes(4, "big")
        length_field_allowed = False

    quoted, ext = _split_extension(msg[8:], msg[5], 4)
    inner = quote_4to6(quoted)
    if isinstance(inner, DropReason):
        return inner
    if new_type == I.V6_PACKET_TOO_BIG:
        advertised = int.from_bytes(msg[6:8], "big")
        if advertised == 0:
            # RFC 7915 §4.2: a pre-RFC 1191 router; estimate from the quoted total length.
            advertised = _plateau_below(
                int.from_bytes(quoted[2:4], "big") if len(quoted) >= 4 else 0
            )
        mtu = min(advertised + IPV6_HEADER_GROWTH, cfg.service_mtu, service_mtu_for(cfg.lan_mtu))
        rest = max(mtu, IPV6_MIN_MTU).to_bytes(4, "big")

    room = MAX_ICMPV6_ERROR_PACKET - 40 - I.ICMP_HEADER_LEN
    if length_field_allowed:
        body, words = _join_extension(inner, ext, 8, room)
        rest = bytes((words,)) + rest[1:]
    else:
        body = inner[:room]
    pseudo = pseudo_header_sum_v6(src6, dst6, NH_ICMPV6, I.ICMP_HEADER_LEN + len(body))
    return I.build_icmp(I.IcmpHeader(new_type, new_code, 0, rest), body, pseudo)


def icmp_6to4(msg: bytes, src6: bytes, dst6: bytes, cfg: XlatConfig) -> bytes | DropReason:
    """A whole ICMPv6 message (unfragmented) as ICMPv4; NDP/MLD are handled before this."""
    if len(msg) < I.ICMP_HEADER_LEN:
        return DropReason.TRUNCATED
    icmp_type, code = msg[0], msg[1]
    if icmp_type in _ECHO_6TO4:
        echo = bytearray(msg)
        echo_6to4(echo, src6, dst6, len(echo))
        return bytes(echo)
    if not I.is_v6_error(icmp_type):
        return DropReason.ICMP_UNTRANSLATABLE
    if not verify(msg, pseudo_header_sum_v6(src6, dst6, NH_ICMPV6, len(msg))):
        return DropReason.ICMP_BAD_CHECKSUM

    rest = b"\x00\x00\x00\x00"
    length_field_allowed = True
    length_words = 0
    if icmp_type == I.V6_DEST_UNREACHABLE:
        mapped_code = _UNREACH_6TO4.get(code)
        if mapped_code is None:
            return DropReason.ICMP_UNTRANSLATABLE
        new_type, new_code = I.V4_DEST_UNREACHABLE, mapped_code
        length_words = msg[4]
    elif icmp_type == I.V6_PACKET_TOO_BIG:
        new_type, new_code = I.V4_DEST_UNREACHABLE, I.V4_CODE_FRAG_NEEDED
        advertised = int.from_bytes(msg[4:8], "big")
        mtu = max(
            min(advertised - IPV6_HEADER_GROWTH, cfg.lan_mtu, cfg.service_mtu - IPV6_HEADER_GROWTH),
            68,
        )
        rest = b"\x00\x00" + mtu.to_bytes(2, "big")
        length_field_allowed = False
    elif icmp_type == I.V6_TIME_EXCEEDED:
        new_type, new_code = I.V4_TIME_EXCEEDED, code
        length_words = msg[4]
    elif icmp_type == I.V6_PARAMETER_PROBLEM:
        if code == 1:
            new_type, new_code = I.V4_DEST_UNREACHABLE, 2  # unrecognised next header
        elif code == 0:
            pointer = _POINTER_6TO4.get(int.from_bytes(msg[4:8], "big"))
            if pointer is None:
                return DropReason.ICMP_UNTRANSLATABLE
            new_type, new_code = I.V4_PARAMETER_PROBLEM, 0
            rest = bytes((pointer, 0, 0, 0))
        else:
            return DropReason.ICMP_UNTRANSLATABLE
        length_field_allowed = code == 1
    else:
        return DropReason.ICMP_UNTRANSLATABLE

    quoted, ext = _split_extension(msg[8:], length_words, 8)
    inner = quote_6to4(quoted)
    if isinstance(inner, DropReason):
        return inner
    room = MAX_ICMPV4_ERROR_PACKET - 20 - I.ICMP_HEADER_LEN
    if length_field_allowed:
        body, words = _join_extension(inner, ext, 4, room)
        rest = rest[:1] + bytes((words,)) + rest[2:]
    else:
        body = inner[:room]
    return I.build_icmp(I.IcmpHeader(new_type, new_code, 0, rest), body)
