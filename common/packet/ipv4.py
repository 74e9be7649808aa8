"""IPv4 header (RFC 791): parse with options, build with checksum, option walking."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NamedTuple

from cjb.common.packet.checksum import internet_checksum, ones_sum
from cjb.common.packet.errors import Invalid, Problem, malformed, truncated

IPV4_HEADER_LEN = 20
FLAG_DF = 0x4000
FLAG_MF = 0x2000
OFFSET_MASK = 0x1FFF

PROTO_ICMP = 1
PROTO_IGMP = 2
PROTO_TCP = 6
PROTO_UDP = 17

OPT_END = 0
OPT_NOP = 1
OPT_LSRR = 131  # loose source and record route
OPT_SSRR = 137  # strict source and record route

HEADER = struct.Struct("!BBHHHBBH4s4s")


class IPv4Header(NamedTuple):
    ihl: int  # header length in bytes
    tos: int
    total_length: int
    identification: int
    flags_offset: int  # the 16-bit field: flags (3 bits) and offset (13 bits, 8-byte units)
    ttl: int
    protocol: int
    checksum: int
    src: bytes
    dst: bytes
    options: bytes

    @property
    def dont_fragment(self) -> bool:
        return bool(self.flags_offset & FLAG_DF)

    @property
    def more_fragments(self) -> bool:
        return bool(self.flags_offset & FLAG_MF)

    @property
    def fragment_offset(self) -> int:
        """Offset in 8-byte units."""
        return self.flags_offset & OFFSET_MASK

    @property
    def is_fragment(self) -> bool:
        return bool(self.flags_offset & (FLAG_MF | OFFSET_MASK))


def parse_ipv4(
    data: bytes, *, check_checksum: bool = True, quoted: bool = False
) -> IPv4Header | Invalid:
    """Parse an IPv4 header at the start of `data`.

    `quoted=True` is for a packet quoted inside an ICMP error (RFC 792): it may be cut
    short, so the total length is not compared with the bytes present and the checksum
    is not checked.
    """
    if len(data) < IPV4_HEADER_LEN:
        return truncated("ipv4 header", IPV4_HEADER_LEN, len(data))
    vihl, tos, total, ident, flags_offset, ttl, proto, csum, src, dst = HEADER.unpack_from(data)
    if vihl >> 4 != 4:
        return malformed(f"ipv4: version {vihl >> 4}")
    ihl = (vihl & 0x0F) * 4
    if ihl < IPV4_HEADER_LEN:
        return malformed(f"ipv4: header length {ihl} < 20")
    if len(data) < ihl:
        return truncated("ipv4 options", ihl, len(data))
    if total < ihl:
        return malformed(f"ipv4: total length {total} < header length {ihl}")
    if not quoted:
        if total > len(data):
            return truncated("ipv4 packet", total, len(data))
        if check_checksum and ones_sum(data[:ihl]) != 0:
            return Invalid(Problem.BAD_CHECKSUM, "ipv4: header checksum")
    if flags_offset & 0x8000:
        return malformed("ipv4: reserved flag set")
    return IPv4Header(
        ihl, tos, total, ident, flags_offset, ttl, proto, csum, src, dst, data[IPV4_HEADER_LEN:ihl]
    )


def build_ipv4(
    *,
    tos: int,
    total_length: int,
    identification: int,
    flags_offset: int,
    ttl: int,
    protocol: int,
    src: bytes,
    dst: bytes,
) -> bytes:
    """A 20-byte header (no options) with its checksum filled in."""
    header = HEADER.pack(
        0x45, tos, total_length, identification, flags_offset, ttl, protocol, 0, src, dst
    )
    csum = internet_checksum(header)
    return header[:10] + csum.to_bytes(2, "big") + header[12:]


def iter_options(options: bytes) -> Iterator[tuple[int, bytes] | Invalid]:
    """Yield (type, whole option bytes) per RFC 791 §3.1, or one Invalid and stop."""
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == OPT_END:
            return
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= len(options):
            yield truncated("ipv4 option length", i + 2, len(options))
            return
        length = options[i + 1]
        if length < 2 or i + length > len(options):
            yield malformed(f"ipv4: option {kind} length {length}")
            return
        yield kind, options[i : i + length]
        i += length


def has_unexpired_source_route(options: bytes) -> bool:
    """RFC 7915 §4.1: LSRR/SSRR whose pointer has not passed the end of the route data.

    The pointer is 1-based from the option start (RFC 791 §3.1); the route is exhausted
    once the pointer exceeds the option length.
    """
    for item in iter_options(options):
        if isinstance(item, Invalid):
            return False
        kind, body = item
        if kind in (OPT_LSRR, OPT_SSRR) and len(body) >= 3 and body[2] <= len(body):
            return True
    return False


def is_translatable_unicast(addr: bytes) -> bool:
    """Can name a host on a LAN: not 0/8, loopback, multicast, class E or broadcast."""
    return is_unicast_first_octet(addr[0])


def is_unicast_first_octet(first: int) -> bool:
    """`is_translatable_unicast` from the address's first octet alone (the fast paths read
    it straight out of the frame)."""
    return 0 < first < 224 and first != 127
