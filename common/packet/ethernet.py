"""Ethernet II framing (IEEE 802.3 with the DIX type field) and multicast MAC mapping."""

from __future__ import annotations

import struct
from typing import NamedTuple

from cjb.common.packet.errors import Invalid, truncated

ETH_HEADER_LEN = 14
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_VLAN = 0x8100

BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = b"\x00" * 6

_HEADER = struct.Struct("!6s6sH")


class EthernetHeader(NamedTuple):
    # Parsed headers are NamedTuples: immutable like a frozen dataclass, but built several
    # times faster, which matters on the per-frame path.
    dst: bytes
    src: bytes
    ethertype: int


def parse_ethernet(frame: bytes) -> EthernetHeader | Invalid:
    if len(frame) < ETH_HEADER_LEN:
        return truncated("ethernet header", ETH_HEADER_LEN, len(frame))
    return EthernetHeader(*_HEADER.unpack_from(frame))


def build_ethernet(dst: bytes, src: bytes, ethertype: int) -> bytes:
    return _HEADER.pack(dst, src, ethertype)


def is_multicast_mac(mac: bytes) -> bool:
    """The I/G bit: set for group addresses, broadcast included (IEEE 802 §8.2)."""
    return bool(mac[0] & 1)


def ipv4_multicast_mac(group: bytes) -> bytes:
    """01:00:5e + the low 23 bits of the group (RFC 1112 §6.4)."""
    return b"\x01\x00\x5e" + bytes((group[1] & 0x7F, group[2], group[3]))


def ipv6_multicast_mac(group: bytes) -> bytes:
    """33:33 + the low 32 bits of the group (RFC 2464 §7)."""
    return b"\x33\x33" + group[12:16]


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def parse_mac(text: str) -> bytes:
    """'02:00:00:00:00:01' -> bytes; raises ValueError naming the text when it is not a MAC."""
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(
            f"not a MAC address: {text!r} (expected six hex pairs like 02:00:00:00:00:01)"
        )
    return bytes(int(p, 16) for p in parts)
