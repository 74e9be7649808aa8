"""IPv4 -> IPv6 (RFC 7915 §4), on Ethernet frames from the LAN side.

Deliberate difference from a router-translator: TTL is copied to the hop limit, not
decremented. The translator is part of one link (docs/decisions/0002-no-ttl-decrement.md);
NDP and mDNS rely on 255.
"""

from __future__ import annotations

from cjb.common.packet.checksum import finish, ones_sum, pseudo_header_sum_v6
from cjb.common.packet.errors import Invalid, Problem
from cjb.common.packet.ethernet import (
    BROADCAST_MAC,
    ETH_HEADER_LEN,
    ETHERTYPE_IPV6,
    EthernetHeader,
    build_ethernet,
    ipv6_multicast_mac,
)
from cjb.common.packet.icmp import V4_ERROR_TYPES
from cjb.common.packet.ipv4 import (
    PROTO_ICMP,
    PROTO_IGMP,
    PROTO_UDP,
    IPv4Header,
    has_unexpired_source_route,
    parse_ipv4,
)
from cjb.common.packet.ipv6 import (
    FRAGMENT_HEADER_LEN,
    IPV6_HEADER_LEN,
    NH_FRAGMENT,
    NH_ICMPV6,
    build_fragment,
    build_ipv6,
)
from cjb.common.packet.transport import CHECKSUM_OFFSET
from cjb.gateway.xlat import local_errors
from cjb.gateway.xlat.addressing import (
    GROUP_4TO6,
    LIMITED_BROADCAST,
    unicast_v4_to_v6,
    v4_to_v6,
)
from cjb.gateway.xlat.alg.udp import to_service_udp
from cjb.gateway.xlat.config import HEADER_GROWTH, UdpZeroChecksum, XlatConfig
from cjb.gateway.xlat.icmp_map import adjust_transport, icmp_4to6
from cjb.gateway.xlat.result import DropReason, Emit, Side, XlatResult

_INVALID_TO_DROP = {
    Problem.TRUNCATED: DropReason.TRUNCATED,
    Problem.MALFORMED: DropReason.MALFORMED,
    Problem.BAD_CHECKSUM: DropReason.BAD_IP_CHECKSUM,
}


MAX_DATAGRAM = 65535  # IPv4 total length, and IPv6 payload length without jumbograms


def drop_for(invalid: Invalid) -> XlatResult:
    return XlatResult(drop=_INVALID_TO_DROP[invalid.problem])


def transport_too_short(protocol: int, length: int) -> DropReason | None:
    """TRUNCATED when a TCP/UDP header is cut before its checksum field, else None."""
    off = CHECKSUM_OFFSET.get(protocol)
    if off is not None and length < off + 2:
        return DropReason.TRUNCATED
    return None


def may_report_v4(ip: IPv4Header, multicast: bool, packet: bytes) -> bool:
    """RFC 1122 §3.2.2: no ICMP error about a multicast/broadcast packet, a non-initial
    fragment, or an ICMP error message."""
    if multicast or ip.fragment_offset:
        return False
    return not (
        ip.protocol == PROTO_ICMP and len(packet) > ip.ihl and packet[ip.ihl] in V4_ERROR_TYPES
    )


def _is_icmp_error_from_unusable_host(ip: IPv4Header, packet: bytes) -> bool:
    """An unfragmented ICMPv4 error whose source is in 0/8 or 127/8 (not multicast, class E
    or broadcast: those never name a sender, RFC 1122 §3.2.1.3)."""
    return (
        ip.src[0] in (0, 127)
        and ip.protocol == PROTO_ICMP
        and not ip.is_fragment
        and len(packet) > ip.ihl
        and packet[ip.ihl] in V4_ERROR_TYPES
    )


def ipv4_to_service(frame: bytes, eth: EthernetHeader, cfg: XlatConfig) -> XlatResult:
    packet = frame[ETH_HEADER_LEN:]
    ip = parse_ipv4(packet)
    if isinstance(ip, Invalid):
        return drop_for(ip)
    packet = packet[: ip.total_length]  # strip Ethernet padding

    src6 = unicast_v4_to_v6(ip.src)
    if src6 is None:
        if not _is_icmp_error_from_unusable_host(ip, packet):
            return XlatResult(drop=DropReason.ADDRESS_NOT_TRANSLATABLE)
        # RFC 7915 §4.1: the "illegal" source of an ICMPv4 error (0/8, 127/8) is
        # translated, for troubleshooting; fe80::/96 maps every address.
        src6 = v4_to_v6(ip.src)
    if ip.dst == LIMITED_BROADCAST or eth.dst == BROADCAST_MAC:
        return XlatResult(drop=DropReason.BROADCAST)
    if ip.protocol == PROTO_IGMP:
        return XlatResult(drop=DropReason.IGMP)
    if ip.fragment_offset * 8 + ip.total_length > MAX_DATAGRAM:
        return XlatResult(drop=DropReason.FRAGMENT_INVALID)  # would reassemble past 64 KiB
    multicast = ip.dst[0] >= 224
    if multicast:
        dst6 = GROUP_4TO6.get(ip.dst)
        if dst6 is None:
            return XlatResult(
                drop=DropReason.MULTICAST_NOT_MAPPED
                if ip.dst[0] < 240
                else DropReason.ADDRESS_NOT_TRANSLATABLE
            )
        eth_dst = ipv6_multicast_mac(dst6)
    else:
        mapped = unicast_v4_to_v6(ip.dst)
        if mapped is None:
            return XlatResult(drop=DropReason.ADDRESS_NOT_TRANSLATABLE)
        dst6 = mapped
        eth_dst = eth.dst

    if ip.options and has_unexpired_source_route(ip.options):
        # RFC 7915 §4.1: not translated; ICMPv4 "source route failed" back to the sender,
        # unless RFC 1122 §3.2.2 forbids an error about this packet.
        if not may_report_v4(ip, multicast, packet):
            return XlatResult(drop=DropReason.SOURCE_ROUTE)
        err = local_errors.source_route_failed(cfg, eth.src, packet, ip.src)
        return XlatResult((err,), DropReason.SOURCE_ROUTE)

    payload = packet[ip.ihl :]
    first = ip.fragment_offset == 0
    if ip.protocol == PROTO_ICMP:
        if ip.is_fragment:
            return XlatResult(drop=DropReason.ICMP_FRAGMENTED)
        translated = icmp_4to6(payload, src6, dst6, cfg)
        if isinstance(translated, DropReason):
            return XlatResult(drop=translated)
        payload = translated
        next_header = NH_ICMPV6
    else:
        next_header = ip.protocol
        if first:
            short = transport_too_short(ip.protocol, len(payload))
            if short is not None:
                # Without the checksum field we cannot keep the checksum right; a first
                # fragment this short is also the RFC 1858 tiny-fragment attack.
                return XlatResult(drop=DropReason.FRAGMENT_INVALID if ip.is_fragment else short)
            l4 = bytearray(payload)
            # mDNS/SSDP payloads rewritten: new UDP length and checksum included.
            alg = to_service_udp(ip.protocol, ip.is_fragment, l4, ip.src + ip.dst, src6 + dst6, cfg)
            if alg is not None:
                l4 = bytearray(alg)
            elif ip.protocol == PROTO_UDP and l4[6:8] == b"\x00\x00":
                # RFC 7915 §4.5: compute it (whole datagrams only), or drop, by policy.
                if ip.is_fragment or cfg.udp_zero_checksum is UdpZeroChecksum.DROP:
                    return XlatResult(drop=DropReason.UDP_ZERO_CHECKSUM)
                udp_len = int.from_bytes(l4[4:6], "big")
                if not 8 <= udp_len <= len(l4):
                    return XlatResult(drop=DropReason.MALFORMED)
                # RFC 768: the checksum covers the datagram as its length field says.
                datagram = l4[:udp_len]
                csum = finish(
                    ones_sum(datagram) + pseudo_header_sum_v6(src6, dst6, PROTO_UDP, udp_len)
                )
                l4[6:8] = csum.to_bytes(2, "big")
            else:
                adjust_transport(ip.protocol, l4, ip.src + ip.dst, src6 + dst6, udp_zero_ok=True)
            payload = bytes(l4)

    eth_header = build_ethernet(eth_dst, eth.src, ETHERTYPE_IPV6)
    limit = cfg.ipv6_fragment_threshold
    if not ip.is_fragment:
        size = 40 + len(payload)
        if ip.dont_fragment:
            if size > cfg.service_mtu:
                # RFC 7915 §4.1 / RFC 1191: tell the sender the MTU across the translator.
                if not may_report_v4(ip, multicast, packet):
                    return XlatResult(drop=DropReason.TOO_BIG)
                err = local_errors.fragmentation_needed(
                    cfg, eth.src, packet, ip.src, cfg.service_mtu - HEADER_GROWTH
                )
                return XlatResult((err,), DropReason.TOO_BIG)
        elif size > limit:
            return _fragmented(eth_header, ip, src6, dst6, next_header, payload, limit)
        header = build_ipv6(
            traffic_class=ip.tos,
            payload_length=len(payload),
            next_header=next_header,
            hop_limit=ip.ttl,
            src=src6,
            dst=dst6,
        )
        return XlatResult((Emit(Side.SERVICE, eth_header + header + payload),))

    # An IPv4 fragment: always gets a Fragment header (RFC 7915 §4.1), split further if
    # needed, unless DF forbids that: RFC 7915 §4.1 then sends "fragmentation needed"
    # (a DF fragment is rare, but legal). The MTU it reports leaves room for the Fragment
    # header too, so a sender that obeys it gets through (RFC 7915 §4.1's 1232 = 1280 - 48).
    if ip.dont_fragment and IPV6_HEADER_LEN + FRAGMENT_HEADER_LEN + len(payload) > cfg.service_mtu:
        if not may_report_v4(ip, multicast, packet):
            return XlatResult(drop=DropReason.TOO_BIG)
        err = local_errors.fragmentation_needed(
            cfg, eth.src, packet, ip.src, cfg.service_mtu - HEADER_GROWTH - FRAGMENT_HEADER_LEN
        )
        return XlatResult((err,), DropReason.TOO_BIG)
    # DF set: never split further, whatever lowest-ipv6-mtu says (that is for DF = 0).
    return _fragmented(
        eth_header,
        ip,
        src6,
        dst6,
        next_header,
        payload,
        cfg.service_mtu if ip.dont_fragment else limit,
    )


def _fragmented(
    eth_header: bytes,
    ip: IPv4Header,
    src6: bytes,
    dst6: bytes,
    next_header: int,
    payload: bytes,
    limit: int,
) -> XlatResult:
    """IPv6 fragments of at most `limit` bytes each, continuing the IPv4 packet's own
    offset and M flag; the IPv4 ID becomes the low 16 bits of the IPv6 ID (RFC 7915 §4.1)."""
    offset_units, more, ident = ip.fragment_offset, ip.more_fragments, ip.identification
    tos, ttl = ip.tos, ip.ttl
    chunk = (limit - 48) // 8 * 8
    emits = []
    pos = 0
    while True:
        piece = payload[pos : pos + chunk]
        last = pos + chunk >= len(payload)
        header = build_ipv6(
            traffic_class=tos,
            payload_length=8 + len(piece),
            next_header=NH_FRAGMENT,
            hop_limit=ttl,
            src=src6,
            dst=dst6,
        )
        frag = build_fragment(next_header, offset_units + pos // 8, more or not last, ident)
        emits.append(Emit(Side.SERVICE, eth_header + header + frag + piece))
        if last:
            return XlatResult(tuple(emits))
        pos += chunk
