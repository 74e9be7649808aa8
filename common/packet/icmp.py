"""ICMPv4 (RFC 792) and ICMPv6 (RFC 4443) type numbers and the common 8-byte header."""

from __future__ import annotations

import struct

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
