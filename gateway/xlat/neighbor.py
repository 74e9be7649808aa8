"""ARP <-> Neighbor Discovery on one link, MAC addresses preserved end to end.

ARP request      -> Neighbor Solicitation (to the solicited-node group, or unicast for a
                    unicast ARP request), source link-layer option = ARP sender MAC
ARP probe        -> DAD NS from :: without options (RFC 5227 §2.1.1, RFC 4862 §5.4.2)
ARP announcement -> unsolicited NA to ff02::1, Override set (RFC 5227 §2.3, RFC 4861 §7.2.6)
ARP reply        -> solicited NA (S and O set), target link-layer option = ARP sender MAC
and the reverse. NDP messages are built with hop limit 255 (RFC 4861 §7.1).
"""

from __future__ import annotations

from cjb.common.packet import ndp
from cjb.common.packet.arp import OP_REPLY, OP_REQUEST, ArpPacket, build_arp
from cjb.common.packet.ethernet import (
    BROADCAST_MAC,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV6,
    ZERO_MAC,
    EthernetHeader,
    build_ethernet,
    ipv6_multicast_mac,
    is_multicast_mac,
)
from cjb.common.packet.icmp import V6_NEIGHBOR_ADVERTISEMENT, V6_NEIGHBOR_SOLICITATION
from cjb.common.packet.ipv4 import is_translatable_unicast
from cjb.common.packet.ipv6 import NH_ICMPV6, IPv6Header, build_ipv6
from cjb.gateway.xlat.addressing import unicast_v6_to_v4, v4_to_v6
from cjb.gateway.xlat.result import DropReason, Emit, Side, XlatResult

_ZERO_IP = b"\x00" * 4
_ALL_NODES_MAC = ipv6_multicast_mac(ndp.ALL_NODES)


def _drop(reason: DropReason) -> XlatResult:
    return XlatResult(drop=reason)


def _ndp_frame(
    eth_dst: bytes, eth_src: bytes, src: bytes, dst: bytes, msg: ndp.NeighborMessage
) -> bytes:
    icmp = ndp.build_neighbor_message(msg, src, dst)
    ip = build_ipv6(
        traffic_class=0,
        payload_length=len(icmp),
        next_header=NH_ICMPV6,
        hop_limit=ndp.NDP_HOP_LIMIT,
        src=src,
        dst=dst,
    )
    return build_ethernet(eth_dst, eth_src, ETHERTYPE_IPV6) + ip + icmp


def arp_to_ndp(eth: EthernetHeader, arp: ArpPacket) -> XlatResult:
    """LAN -> service link."""
    if arp.is_probe:
        if not is_translatable_unicast(arp.target_ip):
            return _drop(DropReason.ADDRESS_NOT_TRANSLATABLE)
        target = v4_to_v6(arp.target_ip)
        group = ndp.solicited_node(target)
        msg = ndp.NeighborMessage(V6_NEIGHBOR_SOLICITATION, 0, target, None)
        frame = _ndp_frame(ipv6_multicast_mac(group), eth.src, ndp.UNSPECIFIED, group, msg)
        return XlatResult((Emit(Side.SERVICE, frame),))

    if not is_translatable_unicast(arp.sender_ip):
        return _drop(DropReason.ADDRESS_NOT_TRANSLATABLE)
    sender = v4_to_v6(arp.sender_ip)

    if arp.is_announcement or (arp.op == OP_REPLY and arp.target_ip == _ZERO_IP):
        # Gratuitous ARP, or a reply defending an address against a probe.
        msg = ndp.NeighborMessage(
            V6_NEIGHBOR_ADVERTISEMENT, ndp.NA_FLAG_OVERRIDE, sender, arp.sender_mac
        )
        frame = _ndp_frame(_ALL_NODES_MAC, eth.src, sender, ndp.ALL_NODES, msg)
        return XlatResult((Emit(Side.SERVICE, frame),))

    if not is_translatable_unicast(arp.target_ip):
        return _drop(DropReason.ADDRESS_NOT_TRANSLATABLE)
    target = v4_to_v6(arp.target_ip)

    if arp.op == OP_REQUEST:
        msg = ndp.NeighborMessage(V6_NEIGHBOR_SOLICITATION, 0, target, arp.sender_mac)
        if is_multicast_mac(eth.dst):
            group = ndp.solicited_node(target)
            frame = _ndp_frame(ipv6_multicast_mac(group), eth.src, sender, group, msg)
        else:
            # A unicast ARP request (RFC 1122 §2.3.2.1 refresh) is NUD's unicast NS.
            frame = _ndp_frame(eth.dst, eth.src, sender, target, msg)
        return XlatResult((Emit(Side.SERVICE, frame),))

    flags = ndp.NA_FLAG_SOLICITED | ndp.NA_FLAG_OVERRIDE
    msg = ndp.NeighborMessage(V6_NEIGHBOR_ADVERTISEMENT, flags, sender, arp.sender_mac)
    eth_dst = eth.dst if not is_multicast_mac(eth.dst) else arp.target_mac
    frame = _ndp_frame(eth_dst, eth.src, sender, target, msg)
    return XlatResult((Emit(Side.SERVICE, frame),))


def ndp_to_arp(eth: EthernetHeader, ip: IPv6Header, icmp: bytes) -> XlatResult:
    """Service link -> LAN, for an NS or NA that passed the hop-limit and checksum checks."""
    parsed = ndp.parse_neighbor_message(icmp)
    if not isinstance(parsed, ndp.NeighborMessage):
        return _drop(DropReason.NDP_INVALID)
    target_v4 = unicast_v6_to_v4(parsed.target)
    if target_v4 is None:
        return _drop(DropReason.ADDRESS_NOT_TRANSLATABLE)

    if parsed.icmp_type == V6_NEIGHBOR_SOLICITATION:
        if ip.src == ndp.UNSPECIFIED:
            # DAD (RFC 4862 §5.4.2): must go to the solicited-node group, without SLLA
            # (RFC 4861 §7.1.1); it becomes an RFC 5227 probe.
            if ip.dst != ndp.solicited_node(parsed.target) or parsed.link_layer_address:
                return _drop(DropReason.NDP_INVALID)
            arp = ArpPacket(OP_REQUEST, eth.src, _ZERO_IP, ZERO_MAC, target_v4)
            return _arp_result(BROADCAST_MAC, eth.src, arp)
        sender_v4 = unicast_v6_to_v4(ip.src)
        if sender_v4 is None:
            return _drop(DropReason.ADDRESS_NOT_TRANSLATABLE)
        sender_mac = parsed.link_layer_address or eth.src
        arp = ArpPacket(OP_REQUEST, sender_mac, sender_v4, ZERO_MAC, target_v4)
        eth_dst = BROADCAST_MAC if is_multicast_mac(eth.dst) else eth.dst
        return _arp_result(eth_dst, eth.src, arp)

    # Neighbor Advertisement. RFC 4861 §7.1.2: solicited NAs are never multicast.
    solicited = bool(parsed.flags & ndp.NA_FLAG_SOLICITED)
    multicast_dst = ip.dst[0] == 0xFF
    if solicited and multicast_dst:
        return _drop(DropReason.NDP_INVALID)
    sender_mac = parsed.link_layer_address or eth.src
    if multicast_dst:
        # Unsolicited NA -> ARP announcement (RFC 5227 §2.3): a broadcast request, sender == target.
        arp = ArpPacket(OP_REQUEST, sender_mac, target_v4, ZERO_MAC, target_v4)
        return _arp_result(BROADCAST_MAC, eth.src, arp)
    requester_v4 = unicast_v6_to_v4(ip.dst)
    if requester_v4 is None:
        return _drop(DropReason.ADDRESS_NOT_TRANSLATABLE)
    arp = ArpPacket(OP_REPLY, sender_mac, target_v4, eth.dst, requester_v4)
    return _arp_result(eth.dst, eth.src, arp)


def _arp_result(eth_dst: bytes, eth_src: bytes, arp: ArpPacket) -> XlatResult:
    frame = build_ethernet(eth_dst, eth_src, ETHERTYPE_ARP) + build_arp(arp)
    return XlatResult((Emit(Side.LAN, frame),))
