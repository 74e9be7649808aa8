"""ICMPv4 (RFC 792) and ICMPv6 (RFC 4443) type numbers and the common 8-byte header."""

from __future__ import annotations

import struct
from typing import NamedTuple

from cjb.common.packet.checksum import finish, ones_sum
from cjb.common.packet.errors import Invalid, truncated

# ICMPv4
V4_ECHO_REPLY = 0
V4_DEST_UNREACHABLE = 3
V4_SOURCE_QUENCH = 4
V4_REDIRECT = 5
V4_ECHO_REQUEST = 8
V4_TIME_EXCEEDED = 11
V4_PARAMETER_PROBLEM = 12
V4_ERROR_TYPES = frozenset({3, 4, 5, 11, 12})
V4_CODE_FRAG_NEEDED = 4
V4_CODE_SOURCE_ROUTE_FAILED = 5

# ICMPv6
V6_DEST_UNREACHABLE = 1
V6_PACKET_TOO_BIG = 2
V6_TIME_EXCEEDED = 3
V6_PARAMETER_PROBLEM = 4
V6_ECHO_REQUEST = 128
V6_ECHO_REPLY = 129
V6_MLD_TYPES = frozenset({130, 131, 132, 143})
V6_ROUTER_SOLICITATION = 133
V6_ROUTER_ADVERTISEMENT = 134
V6_NEIGHBOR_SOLICITATION = 135
V6_NEIGHBOR_ADVERTISEMENT = 136
V6_REDIRECT = 137

ICMP_HEADER_LEN = 8
HEADER = struct.Struct("!BBH")  # type, code, checksum; the next 4 bytes depend on the type


def is_v6_error(icmp_type: int) -> bool:
    """RFC 4443 §2.1: types 0-127 are errors."""
    return icmp_type < 128


class IcmpHeader(NamedTuple):
    """The fixed 8 bytes shared by ICMPv4 and ICMPv6: type, code, checksum and the
    type-specific word (echo id/seq, MTU, pointer, RFC 4884 length)."""

    icmp_type: int
    code: int
    checksum: int
    rest: bytes


def parse_icmp(data: bytes) -> IcmpHeader | Invalid:
    if len(data) < ICMP_HEADER_LEN:
        return truncated("icmp header", ICMP_HEADER_LEN, len(data))
    icmp_type, code, checksum = HEADER.unpack_from(data)
    return IcmpHeader(icmp_type, code, checksum, data[4:8])


def build_icmp(header: IcmpHeader, body: bytes, pseudo_sum: int = 0) -> bytes:
    """Header + body with the checksum computed; `pseudo_sum` is the IPv6 pseudo-header
    sum for ICMPv6 (RFC 4443 §2.3), 0 for ICMPv4 (RFC 792)."""
    out = HEADER.pack(header.icmp_type, header.code, 0) + header.rest + body
    csum = finish(ones_sum(out) + pseudo_sum)
    return out[:2] + csum.to_bytes(2, "big") + out[4:]
