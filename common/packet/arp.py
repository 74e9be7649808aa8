"""ARP for IPv4 over Ethernet (RFC 826), with RFC 5227 probe/announcement predicates."""

from __future__ import annotations

import struct
from typing import NamedTuple

from cjb.common.packet.errors import Invalid, malformed, truncated

ARP_LEN = 28
OP_REQUEST = 1
OP_REPLY = 2
_HTYPE_ETHERNET = 1
_PTYPE_IPV4 = 0x0800
_ZERO_IP = b"\x00" * 4

_ARP = struct.Struct("!HHBBH6s4s6s4s")


class ArpPacket(NamedTuple):
    op: int
    sender_mac: bytes
    sender_ip: bytes
    target_mac: bytes
    target_ip: bytes

    @property
    def is_probe(self) -> bool:
        """RFC 5227 §2.1.1: a request with an all-zero sender IP address."""
        return self.op == OP_REQUEST and self.sender_ip == _ZERO_IP

    @property
    def is_announcement(self) -> bool:
        """Gratuitous ARP / RFC 5227 §2.3 announcement: sender IP == target IP."""
        return self.sender_ip == self.target_ip and self.sender_ip != _ZERO_IP


def parse_arp(data: bytes) -> ArpPacket | Invalid:
    """Parse Ethernet/IPv4 ARP; other hardware or protocol types are reported malformed."""
    if len(data) < ARP_LEN:
        return truncated("arp", ARP_LEN, len(data))
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(data)
    if htype != _HTYPE_ETHERNET or ptype != _PTYPE_IPV4 or hlen != 6 or plen != 4:
        return malformed(f"arp: not Ethernet/IPv4 (htype={htype} ptype={ptype:#06x})")
    if op not in (OP_REQUEST, OP_REPLY):
        return malformed(f"arp: opcode {op} is neither request nor reply")
    return ArpPacket(op, sha, spa, tha, tpa)


def build_arp(packet: ArpPacket) -> bytes:
    return _ARP.pack(
        _HTYPE_ETHERNET,
        _PTYPE_IPV4,
        6,
        4,
        packet.op,
        packet.sender_mac,
        packet.sender_ip,
        packet.target_mac,
        packet.target_ip,
    )
