"""Neighbor Discovery (RFC 4861) solicitations, advertisements and link-layer options."""

from __future__ import annotations

import struct
from typing import NamedTuple

from cjb.common.packet.checksum import finish, ones_sum, pseudo_header_sum_v6
from cjb.common.packet.errors import Invalid, malformed, truncated
from cjb.common.packet.icmp import V6_NEIGHBOR_ADVERTISEMENT, V6_NEIGHBOR_SOLICITATION
from cjb.common.packet.ipv6 import NH_ICMPV6

OPT_SOURCE_LLA = 1
OPT_TARGET_LLA = 2
NA_FLAG_ROUTER = 0x80
NA_FLAG_SOLICITED = 0x40
NA_FLAG_OVERRIDE = 0x20
NDP_HOP_LIMIT = 255  # RFC 4861 §7.1: proves the sender is on-link

_NS_NA = struct.Struct("!BBHI16s")  # type, code, checksum, flags/reserved, target
NS_NA_LEN = _NS_NA.size  # 24

ALL_NODES = bytes.fromhex("ff020000000000000000000000000001")
UNSPECIFIED = bytes(16)


class NeighborMessage(NamedTuple):
    """An NS or an NA; `flags` is the first byte of the NA flags word (0 for NS)."""

    icmp_type: int
    flags: int
    target: bytes
    link_layer_address: bytes | None  # source LLA for NS, target LLA for NA


def solicited_node(addr: bytes) -> bytes:
    """ff02::1:ffXX:XXXX (RFC 4291 §2.7.1)."""
    return bytes.fromhex("ff0200000000000000000001ff") + addr[13:16]


def parse_neighbor_message(icmp: bytes) -> NeighborMessage | Invalid:
    """Parse an NS/NA body (the ICMPv6 message); checks the RFC 4861 §7.1 length and options."""
    if len(icmp) < NS_NA_LEN:
        return truncated("ndp message", NS_NA_LEN, len(icmp))
    icmp_type, code, _csum, flags_word, target = _NS_NA.unpack_from(icmp)
    if icmp_type not in (V6_NEIGHBOR_SOLICITATION, V6_NEIGHBOR_ADVERTISEMENT):
        return malformed(f"ndp: type {icmp_type} is not NS/NA")
    if code != 0:
        return malformed(f"ndp: code {code} != 0")
    if target[0] == 0xFF:
        return malformed("ndp: multicast target")
    wanted = OPT_SOURCE_LLA if icmp_type == V6_NEIGHBOR_SOLICITATION else OPT_TARGET_LLA
    lla: bytes | None = None
    pos = NS_NA_LEN
    while pos < len(icmp):
        if pos + 2 > len(icmp):
            return truncated("ndp option", pos + 2, len(icmp))
        opt_len = icmp[pos + 1] * 8
        if opt_len == 0:
            return malformed("ndp: option with length 0")  # RFC 4861 §4.6
        if pos + opt_len > len(icmp):
            return truncated("ndp option", pos + opt_len, len(icmp))
        if icmp[pos] == wanted and opt_len >= 8:
            lla = icmp[pos + 2 : pos + 8]
        pos += opt_len
    flags = flags_word >> 24 if icmp_type == V6_NEIGHBOR_ADVERTISEMENT else 0
    return NeighborMessage(icmp_type, flags, target, lla)


def build_neighbor_message(msg: NeighborMessage, src: bytes, dst: bytes) -> bytes:
    """The ICMPv6 message (checksum filled in for src/dst), LLA option appended if given."""
    body = _NS_NA.pack(msg.icmp_type, 0, 0, msg.flags << 24, msg.target)
    if msg.link_layer_address is not None:
        opt = OPT_SOURCE_LLA if msg.icmp_type == V6_NEIGHBOR_SOLICITATION else OPT_TARGET_LLA
        body += bytes((opt, 1)) + msg.link_layer_address
    csum = finish(ones_sum(body) + pseudo_header_sum_v6(src, dst, NH_ICMPV6, len(body)))
    return body[:2] + csum.to_bytes(2, "big") + body[4:]
