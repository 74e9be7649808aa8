"""ICMP errors the translator sends itself, back towards the sender of a packet it cannot
forward: fragmentation needed and source route failed to the LAN, packet too big and
parameter problem to the service link (RFC 7915 §4.1, §5.1)."""

from __future__ import annotations

from cjb.common.packet import icmp as I
from cjb.common.packet.checksum import pseudo_header_sum_v6
from cjb.common.packet.ethernet import ETHERTYPE_IPV4, ETHERTYPE_IPV6, build_ethernet
from cjb.common.packet.ipv4 import PROTO_ICMP, build_ipv4
from cjb.common.packet.ipv6 import NH_ICMPV6, build_ipv6
from cjb.gateway.xlat.config import XlatConfig
from cjb.gateway.xlat.icmp_map import MAX_ICMPV4_ERROR_PACKET, MAX_ICMPV6_ERROR_PACKET
from cjb.gateway.xlat.result import Emit, Side

_ERROR_TTL = 64


def icmpv4_error(
    cfg: XlatConfig,
    eth_src: bytes,
    packet: bytes,
    src: bytes,
    icmp_type: int,
    code: int,
    rest: bytes,
) -> Emit:
    """An ICMPv4 error about `packet` (whose sender is `src`, MAC `eth_src`), towards the LAN."""
    quoted = packet[: MAX_ICMPV4_ERROR_PACKET - 28]
    body = I.build_icmp(I.IcmpHeader(icmp_type, code, 0, rest), quoted)
    ip = build_ipv4(
        tos=0,
        total_length=20 + len(body),
        identification=0,
        flags_offset=0,
        ttl=_ERROR_TTL,
        protocol=PROTO_ICMP,
        src=cfg.icmp_source_v4.packed,
        dst=src,
    )
    return Emit(Side.LAN, build_ethernet(eth_src, cfg.translator_mac, ETHERTYPE_IPV4) + ip + body)


def icmpv6_error(
    cfg: XlatConfig,
    eth_src: bytes,
    packet: bytes,
    src: bytes,
    icmp_type: int,
    code: int,
    rest: bytes,
) -> Emit:
    """An ICMPv6 error about `packet`, towards the service link (RFC 4443 §2.4(c) size cap)."""
    own = cfg.icmp_source_v6.packed
    quoted = packet[: MAX_ICMPV6_ERROR_PACKET - 48]
    pseudo = pseudo_header_sum_v6(own, src, NH_ICMPV6, 8 + len(quoted))
    body = I.build_icmp(I.IcmpHeader(icmp_type, code, 0, rest), quoted, pseudo)
    ip = build_ipv6(
        traffic_class=0,
        payload_length=len(body),
        next_header=NH_ICMPV6,
        hop_limit=_ERROR_TTL,
        src=own,
        dst=src,
    )
    return Emit(
        Side.SERVICE, build_ethernet(eth_src, cfg.translator_mac, ETHERTYPE_IPV6) + ip + body
    )


def fragmentation_needed(
    cfg: XlatConfig, eth_src: bytes, packet: bytes, src: bytes, mtu: int
) -> Emit:
    return icmpv4_error(
        cfg,
        eth_src,
        packet,
        src,
        I.V4_DEST_UNREACHABLE,
        I.V4_CODE_FRAG_NEEDED,
        b"\x00\x00" + mtu.to_bytes(2, "big"),
    )


def source_route_failed(cfg: XlatConfig, eth_src: bytes, packet: bytes, src: bytes) -> Emit:
    return icmpv4_error(
        cfg, eth_src, packet, src, I.V4_DEST_UNREACHABLE, I.V4_CODE_SOURCE_ROUTE_FAILED, bytes(4)
    )


def packet_too_big(cfg: XlatConfig, eth_src: bytes, packet: bytes, src: bytes, mtu: int) -> Emit:
    return icmpv6_error(cfg, eth_src, packet, src, I.V6_PACKET_TOO_BIG, 0, mtu.to_bytes(4, "big"))


def parameter_problem(
    cfg: XlatConfig, eth_src: bytes, packet: bytes, src: bytes, pointer: int
) -> Emit:
    return icmpv6_error(
        cfg, eth_src, packet, src, I.V6_PARAMETER_PROBLEM, 0, pointer.to_bytes(4, "big")
    )
