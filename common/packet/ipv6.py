"""IPv6 header (RFC 8200), extension header walking and the Fragment header (§4.5)."""

from __future__ import annotations

import struct
from typing import NamedTuple

from cjb.common.packet.errors import Invalid, malformed, truncated

IPV6_HEADER_LEN = 40
FRAGMENT_HEADER_LEN = 8

NH_HOP_BY_HOP = 0
NH_ROUTING = 43
NH_FRAGMENT = 44
NH_ICMPV6 = 58
NH_NO_NEXT = 59
NH_DEST_OPTS = 60
# Extension headers a translator steps over (RFC 7915 §5.1); others are upper layers.
SKIPPABLE_EXTENSIONS = frozenset({NH_HOP_BY_HOP, NH_ROUTING, NH_DEST_OPTS})
MAX_EXTENSION_HEADERS = 8  # bound the walk: untrusted input must not make us loop long

HEADER = struct.Struct("!IHBB16s16s")
_FRAGMENT = struct.Struct("!BBHI")


class IPv6Header(NamedTuple):
    traffic_class: int
    flow_label: int
    payload_length: int
    next_header: int
    hop_limit: int
    src: bytes
    dst: bytes


class FragmentHeader(NamedTuple):
    next_header: int
    offset: int  # 8-byte units
    more: bool
    identification: int


class ExtensionChain(NamedTuple):
    """The result of walking the extension headers after the fixed header."""

    upper_layer: int  # protocol number of what follows the last extension header
    upper_offset: int  # offset of the upper layer from the start of the IPv6 header
    fragment: FragmentHeader | None
    routing_segments_left_offset: int | None  # set when a routing header has segments left


def parse_ipv6(data: bytes, *, quoted: bool = False) -> IPv6Header | Invalid:
    """Parse the fixed header. `quoted=True` tolerates a payload cut short (ICMP errors)."""
    if len(data) < IPV6_HEADER_LEN:
        return truncated("ipv6 header", IPV6_HEADER_LEN, len(data))
    vtf, plen, nh, hlim, src, dst = HEADER.unpack_from(data)
    if vtf >> 28 != 6:
        return malformed(f"ipv6: version {vtf >> 28}")
    if not quoted and IPV6_HEADER_LEN + plen > len(data):
        return truncated("ipv6 payload", IPV6_HEADER_LEN + plen, len(data))
    return IPv6Header((vtf >> 20) & 0xFF, vtf & 0xFFFFF, plen, nh, hlim, src, dst)


def build_ipv6(
    *,
    traffic_class: int,
    payload_length: int,
    next_header: int,
    hop_limit: int,
    src: bytes,
    dst: bytes,
) -> bytes:
    """The fixed header; the flow label is always 0 (RFC 7915 §4.1)."""
    return HEADER.pack(
        0x60000000 | (traffic_class << 20), payload_length, next_header, hop_limit, src, dst
    )


def parse_fragment(data: bytes, offset: int) -> FragmentHeader | Invalid:
    if len(data) < offset + FRAGMENT_HEADER_LEN:
        return truncated("ipv6 fragment header", offset + FRAGMENT_HEADER_LEN, len(data))
    nh, _reserved, off_flags, ident = _FRAGMENT.unpack_from(data, offset)
    return FragmentHeader(nh, off_flags >> 3, bool(off_flags & 1), ident)


def build_fragment(next_header: int, offset: int, more: bool, identification: int) -> bytes:
    return _FRAGMENT.pack(next_header, 0, (offset << 3) | int(more), identification)


def walk_extensions(data: bytes, first: int, end: int) -> ExtensionChain | Invalid:
    """Step over the extension headers of the packet in data[:end] (RFC 8200 §4).

    Stops at the first upper-layer header, at a non-first fragment (whose remaining
    headers are not in this packet), or at an extension header we cannot step over.
    """
    nh = first
    pos = IPV6_HEADER_LEN
    fragment: FragmentHeader | None = None
    routing_left_at: int | None = None
    for _ in range(MAX_EXTENSION_HEADERS + 1):
        if nh == NH_FRAGMENT:
            if fragment is not None:
                return malformed("ipv6: two fragment headers")
            parsed = parse_fragment(data[:end], pos)
            if isinstance(parsed, Invalid):
                return parsed
            fragment = parsed
            nh = parsed.next_header
            pos += FRAGMENT_HEADER_LEN
            if parsed.offset:
                # Later fragments carry only fragmentable-part data (RFC 8200 §4.5).
                return ExtensionChain(nh, pos, fragment, routing_left_at)
            continue
        if nh not in SKIPPABLE_EXTENSIONS:
            return ExtensionChain(nh, pos, fragment, routing_left_at)
        if pos + 2 > end:
            return truncated("ipv6 extension header", pos + 2, end)
        length = (data[pos + 1] + 1) * 8
        if pos + length > end:
            return truncated("ipv6 extension header", pos + length, end)
        if nh == NH_ROUTING and data[pos + 3] != 0:
            routing_left_at = pos + 3
        nh = data[pos]
        pos += length
    return malformed(f"ipv6: more than {MAX_EXTENSION_HEADERS} extension headers")
