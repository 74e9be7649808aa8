"""Adapting capture link types to the core, which only speaks Ethernet frames.

Raw-IP captures (link types 101, 228, 229) carry no Ethernet header, so each packet gets a
synthetic one on the way in and loses it on the way out. The synthetic MACs are derived
from the IP addresses so that one host keeps one MAC in both directions:

- unicast: 02:00 + the low 32 bits of the address (locally administered; 192.168.0.10 and
  fe80::c0a8:a both become 02:00:c0:a8:00:0a),
- IPv4 multicast: 01:00:5e + the low 23 bits (RFC 1112 §6.4),
- IPv6 multicast: 33:33 + the low 32 bits (RFC 2464 §7),
- 255.255.255.255: ff:ff:ff:ff:ff:ff.
"""

from __future__ import annotations

import struct

from cjb.gateway.xlat.offline.pcapio import LinkType

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_IPV6 = 0x86DD

BROADCAST_MAC = b"\xff" * 6
_ETH = struct.Struct("!6s6sH")


def output_linktype(input_linktype: LinkType) -> LinkType:
    """The link type of the translated capture.

    Ethernet and raw IP (101) keep theirs. 228 (IPv4 only) and 229 (IPv6 only) cannot hold
    what translation produces (the other IP version), so they become 101, whose readers
    take the version from each packet's first nibble.
    """
    if input_linktype in (LinkType.IPV4, LinkType.IPV6):
        return LinkType.RAW
    return input_linktype


def _unicast_mac(low32: bytes) -> bytes:
    return b"\x02\x00" + low32.ljust(4, b"\x00")


def _ipv4_dst_mac(dst: bytes) -> bytes:
    if dst == b"\xff\xff\xff\xff":
        return BROADCAST_MAC
    if len(dst) == 4 and 224 <= dst[0] <= 239:
        return b"\x01\x00\x5e" + bytes((dst[1] & 0x7F, dst[2], dst[3]))
    return _unicast_mac(dst)


def _ipv6_dst_mac(dst: bytes) -> bytes:
    if dst[:1] == b"\xff":
        return b"\x33\x33" + dst[12:16].ljust(4, b"\x00")
    return _unicast_mac(dst[12:16])


def packet_version(packet: bytes, linktype: LinkType) -> int:
    """4 or 6: what the capture says the packet is (for 101, its first nibble)."""
    if linktype is LinkType.IPV6:
        return 6
    if linktype is LinkType.RAW and packet[:1] and packet[0] >> 4 == 6:
        return 6
    # 228, and 101 packets that are neither: the core drops a malformed IPv4 header with a
    # named reason, which is the honest outcome for bytes that are no IP at all.
    return 4


def to_ethernet(packet: bytes, linktype: LinkType) -> bytes:
    """The Ethernet frame the core sees for one captured packet."""
    if linktype is LinkType.ETHERNET:
        return packet
    if packet_version(packet, linktype) == 6:
        dst, src = _ipv6_dst_mac(packet[24:40]), _unicast_mac(packet[20:24])
        return _ETH.pack(dst, src, ETHERTYPE_IPV6) + packet
    dst, src = _ipv4_dst_mac(packet[16:20]), _unicast_mac(packet[12:16])
    return _ETH.pack(dst, src, ETHERTYPE_IPV4) + packet


def from_ethernet(frame: bytes, linktype: LinkType) -> bytes | None:
    """The packet to write for one emitted frame, or None if the link type cannot hold it.

    Only ARP can be unrepresentable here: an NDP message from a raw IPv6 capture becomes
    ARP, and raw IP has no place for it. The caller counts those.
    """
    if linktype is LinkType.ETHERNET:
        return frame
    if len(frame) >= _ETH.size:
        ethertype = int.from_bytes(frame[12:14], "big")
        if ethertype in (ETHERTYPE_IPV4, ETHERTYPE_IPV6):
            return frame[_ETH.size :]
    return None
