"""IPv6 -> IPv4 (RFC 7915 §5), on Ethernet frames from the service link.

Hop limit is copied to TTL, not decremented (see to_service.py).
"""

from __future__ import annotations

from cjb.common.packet import icmp as I
from cjb.common.packet.checksum import pseudo_header_sum_v6, verify
from cjb.common.packet.errors import Invalid
from cjb.common.packet.ethernet import (
    ETH_HEADER_LEN,
    ETHERTYPE_IPV4,
    EthernetHeader,
    build_ethernet,
    ipv4_multicast_mac,
)
from cjb.common.packet.ipv4 import FLAG_DF, FLAG_MF, PROTO_ICMP, build_ipv4
from cjb.common.packet.ipv6 import (
    NH_ICMPV6,
    SKIPPABLE_EXTENSIONS,
    IPv6Header,
    parse_ipv6,
    walk_extensions,
)
from cjb.common.packet.ndp import NDP_HOP_LIMIT
from cjb.gateway.xlat import local_errors
from cjb.gateway.xlat.addressing import GROUP_6TO4, unicast_v6_to_v4
from cjb.gateway.xlat.alg.udp import to_lan_udp
from cjb.gateway.xlat.config import HEADER_GROWTH, IPV6_MIN_MTU, XlatConfig
from cjb.gateway.xlat.icmp_map import DF_THRESHOLD, adjust_transport, icmp_6to4
from cjb.gateway.xlat.neighbor import ndp_to_arp
from cjb.gateway.xlat.result import DropReason, Emit, Side, XlatResult
from cjb.gateway.xlat.to_service import MAX_DATAGRAM, drop_for, transport_too_short


class IdentificationSource:
    """IPv4 IDs for translated packets with DF clear: RFC 6864 §4.2 wants them unique
    per (src, dst, protocol) while fragments may exist; a wrapping counter suffices."""

    def __init__(self, start: int = 0) -> None:
        self._next = start & 0xFFFF

    def next(self) -> int:
        value = self._next
        self._next = (value + 1) & 0xFFFF
        return value


def ipv6_to_lan(
    frame: bytes, eth: EthernetHeader, cfg: XlatConfig, ids: IdentificationSource
) -> XlatResult:
    packet = frame[ETH_HEADER_LEN:]
    ip = parse_ipv6(packet)
    if isinstance(ip, Invalid):
        return drop_for(ip)
    packet = packet[: 40 + ip.payload_length]
    chain = walk_extensions(packet, ip.next_header, len(packet))
    if isinstance(chain, Invalid):
        return drop_for(chain)

    upper = chain.upper_layer
    frag = chain.fragment
    # RFC 6946 §4: an atomic fragment (offset 0, M = 0) is a whole packet, processed in
    # isolation; it still keeps its Identification (RFC 7915 §5.1.1, below).
    whole = frag is None or (frag.offset == 0 and not frag.more)
    if frag is not None and not whole:
        if frag.next_header in SKIPPABLE_EXTENSIONS:
            # Headers after the Fragment header sit in the first fragment only; translating
            # that one without them and the rest with them could never reassemble.
            return XlatResult(drop=DropReason.FRAGMENT_INVALID)
        if frag.offset * 8 + len(packet) - chain.upper_offset + 20 > MAX_DATAGRAM:
            return XlatResult(drop=DropReason.FRAGMENT_INVALID)  # past 64 KiB as IPv4
    if upper == NH_ICMPV6 and whole and len(packet) >= chain.upper_offset + 1:
        icmp_type = packet[chain.upper_offset]
        if icmp_type in (I.V6_NEIGHBOR_SOLICITATION, I.V6_NEIGHBOR_ADVERTISEMENT):
            msg = packet[chain.upper_offset :]
            # RFC 4861 §7.1: hop limit 255 and a valid checksum, or it is not NDP; RFC 6980
            # §5: NDP in a packet with a Fragment header (even an atomic one) is ignored.
            if (
                frag is not None
                or ip.hop_limit != NDP_HOP_LIMIT
                or not verify(msg, pseudo_header_sum_v6(ip.src, ip.dst, NH_ICMPV6, len(msg)))
            ):
                return XlatResult(drop=DropReason.NDP_INVALID)
            return ndp_to_arp(eth, ip, msg)
        if icmp_type in (I.V6_ROUTER_SOLICITATION, I.V6_ROUTER_ADVERTISEMENT, I.V6_REDIRECT):
            return XlatResult(drop=DropReason.NDP_NO_ARP_EQUIVALENT)
        if icmp_type in I.V6_MLD_TYPES:
            return XlatResult(drop=DropReason.MLD)

    src4 = unicast_v6_to_v4(ip.src)
    if src4 is None:
        return XlatResult(drop=DropReason.ADDRESS_NOT_TRANSLATABLE)
    if ip.dst[0] == 0xFF:
        group = GROUP_6TO4.get(ip.dst)
        if group is None:
            return XlatResult(drop=DropReason.MULTICAST_NOT_MAPPED)
        dst4 = group
        eth_dst = ipv4_multicast_mac(group)
    else:
        mapped = unicast_v6_to_v4(ip.dst)
        if mapped is None:
            return XlatResult(drop=DropReason.ADDRESS_NOT_TRANSLATABLE)
        dst4 = mapped
        eth_dst = eth.dst

    first = frag is None or frag.offset == 0
    # RFC 4443 §2.4(e.1): never an ICMPv6 error about an ICMPv6 error message.
    quotes_error = (
        upper == NH_ICMPV6
        and first
        and len(packet) > chain.upper_offset
        and I.is_v6_error(packet[chain.upper_offset])
    )
    if chain.routing_segments_left_offset is not None:
        # RFC 7915 §5.1: not translated; parameter problem pointing at Segments Left,
        # except about multicast (RFC 4443 §2.4(e.3)), a non-initial fragment (whose
        # upper layer is unknown, so it may be an error message) or an ICMPv6 error.
        if ip.dst[0] == 0xFF or not first or quotes_error:
            return XlatResult(drop=DropReason.ROUTING_HEADER)
        err = local_errors.parameter_problem(
            cfg, eth.src, packet, ip.src, chain.routing_segments_left_offset
        )
        return XlatResult((err,), DropReason.ROUTING_HEADER)
    # Any other Next Header value (AH, experiments 253/254, protocols we do not know) is
    # the upper layer: RFC 7915 §5.1 copies it into Protocol, payload untouched.

    payload = packet[chain.upper_offset :]
    if upper == NH_ICMPV6:
        if not whole:
            return XlatResult(drop=DropReason.ICMP_FRAGMENTED)
        translated = icmp_6to4(payload, ip.src, ip.dst, cfg)
        if isinstance(translated, DropReason):
            return XlatResult(drop=translated)
        payload = translated
        protocol = PROTO_ICMP
    else:
        protocol = upper
        if first:
            short = transport_too_short(protocol, len(payload))
            if short is not None:
                return XlatResult(drop=short if whole else DropReason.FRAGMENT_INVALID)
            l4 = bytearray(payload)
            # mDNS/SSDP payloads rewritten: new UDP length and checksum included.
            alg = to_lan_udp(protocol, not whole, l4, ip.src + ip.dst, src4 + dst4, cfg)
            if alg is not None:
                l4 = bytearray(alg)
            # A zero UDP checksum is invalid in IPv6 (RFC 8200 §8.1); never pass it on as
            # IPv4's "no checksum".
            elif not adjust_transport(
                protocol, l4, ip.src + ip.dst, src4 + dst4, udp_zero_ok=False
            ):
                return XlatResult(drop=DropReason.UDP_ZERO_CHECKSUM)
            payload = bytes(l4)

    total = 20 + len(payload)
    eth_header = build_ethernet(eth_dst, eth.src, ETHERTYPE_IPV4)
    if frag is None:
        # RFC 7915 §5.1: DF only on packets larger than 1260 bytes; smaller ones may be
        # fragmented by IPv4 routers, so they need a unique ID.
        df = total > DF_THRESHOLD
        if total > cfg.lan_mtu:
            if df:
                if quotes_error:  # RFC 4443 §2.4(e.1)
                    return XlatResult(drop=DropReason.TOO_BIG)
                mtu = max(cfg.lan_mtu + HEADER_GROWTH, IPV6_MIN_MTU)
                err = local_errors.packet_too_big(cfg, eth.src, packet, ip.src, mtu)
                return XlatResult((err,), DropReason.TOO_BIG)
            return _fragmented(
                eth_header, ip, src4, dst4, protocol, payload, 0, False, ids.next(), cfg.lan_mtu
            )
        ident = 0 if df else ids.next()
        header = build_ipv4(
            tos=ip.traffic_class,
            total_length=total,
            identification=ident,
            flags_offset=FLAG_DF if df else 0,
            ttl=ip.hop_limit,
            protocol=protocol,
            src=src4,
            dst=dst4,
        )
        return XlatResult((Emit(Side.LAN, eth_header + header + payload),))

    # RFC 7915 §5.1.1: ID from the low 16 bits, offset and M copied, DF clear.
    return _fragmented(
        eth_header,
        ip,
        src4,
        dst4,
        protocol,
        payload,
        frag.offset,
        frag.more,
        frag.identification & 0xFFFF,
        cfg.lan_mtu,
    )


def _fragmented(
    eth_header: bytes,
    ip: IPv6Header,
    src4: bytes,
    dst4: bytes,
    protocol: int,
    payload: bytes,
    offset_units: int,
    more: bool,
    ident: int,
    mtu: int,
) -> XlatResult:
    """IPv4 fragments no larger than the LAN MTU (one, if it already fits)."""
    tos = ip.traffic_class
    ttl = ip.hop_limit
    chunk = (mtu - 20) // 8 * 8
    emits = []
    pos = 0
    while True:
        piece = payload[pos : pos + chunk]
        last = pos + chunk >= len(payload)
        flags = offset_units + pos // 8
        if more or not last:
            flags |= FLAG_MF
        header = build_ipv4(
            tos=tos,
            total_length=20 + len(piece),
            identification=ident,
            flags_offset=flags,
            ttl=ttl,
            protocol=protocol,
            src=src4,
            dst=dst4,
        )
        emits.append(Emit(Side.LAN, eth_header + header + piece))
        if last:
            return XlatResult(tuple(emits))
        pos += chunk
