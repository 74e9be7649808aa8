"""The translator: one Ethernet frame in, frames out on either port, or a counted drop.

Dispatch is by direction and EtherType; the work is in to_service.py (IPv4 -> IPv6),
to_lan.py (IPv6 -> IPv4), neighbor.py (ARP <-> NDP) and icmp_map.py (ICMP <-> ICMPv6).
"""

from __future__ import annotations

from cjb.common.packet.arp import parse_arp
from cjb.common.packet.errors import Invalid, Problem
from cjb.common.packet.ethernet import (
    ETH_HEADER_LEN,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    EthernetHeader,
    parse_ethernet,
)
from cjb.gateway.xlat.config import XlatConfig
from cjb.gateway.xlat.counters import XlatCounters
from cjb.gateway.xlat.errors import RecentErrors
from cjb.gateway.xlat.fast_path import ipv4_to_service_fast, ipv6_to_lan_fast
from cjb.gateway.xlat.neighbor import arp_to_ndp
from cjb.gateway.xlat.result import Direction, DropReason, XlatResult
from cjb.gateway.xlat.to_lan import IdentificationSource, ipv6_to_lan
from cjb.gateway.xlat.to_service import drop_for, ipv4_to_service


class Translator:
    """Stateless but for counters and the IPv4 ID source; one instance per tenant link."""

    def __init__(
        self, config: XlatConfig | None = None, *, first_ipv4_id: int = 0, fast_path: bool = True
    ) -> None:
        """`fast_path=False` runs every frame through the full reference path."""
        self.config = config or XlatConfig()
        self.fast_path = fast_path
        self.counters = XlatCounters()
        # Exceptions caught below, with type and message: INTERNAL_ERROR counts them, this
        # says what they were (the worker logs them, `cjb xlat` exits 3 on them).
        self.errors = RecentErrors()
        self._ids = IdentificationSource(first_ipv4_id)

    def translate(self, frame: bytes | bytearray | memoryview, direction: Direction) -> XlatResult:
        counters = self.counters
        counters.frames_in[direction] += 1
        counters.bytes_in[direction] += len(frame)
        if type(frame) is not bytes:
            frame = bytes(frame)
        try:
            if not self.fast_path:
                result = self._dispatch(frame, direction)
            elif direction is Direction.TO_SERVICE:
                result = ipv4_to_service_fast(frame, self.config) or self._dispatch(
                    frame, direction
                )
            else:
                result = ipv6_to_lan_fast(frame, self.config, self._ids) or self._dispatch(
                    frame, direction
                )
        except Exception as exc:  # a core bug must not stop the data path; kept, not hidden
            self.errors.record(exc, direction, frame)
            result = XlatResult(drop=DropReason.INTERNAL_ERROR)
        if result.drop is not None:
            counters.drops[result.drop] += 1
        for emit in result.emits:
            counters.frames_out[emit.side] += 1
            counters.bytes_out[emit.side] += len(emit.frame)
        return result

    def _dispatch(self, frame: bytes, direction: Direction) -> XlatResult:
        eth = parse_ethernet(frame)
        if isinstance(eth, Invalid):
            return drop_for(eth)
        ethertype = eth.ethertype
        if direction is Direction.TO_SERVICE:
            if ethertype == ETHERTYPE_IPV4:
                return ipv4_to_service(frame, eth, self.config)
            if ethertype == ETHERTYPE_ARP:
                return self._arp(frame, eth)
            if ethertype == ETHERTYPE_IPV6:
                return XlatResult(drop=DropReason.NATIVE_IPV6_ON_LAN)
            return XlatResult(drop=DropReason.UNSUPPORTED_ETHERTYPE)
        if ethertype == ETHERTYPE_IPV6:
            return ipv6_to_lan(frame, eth, self.config, self._ids)
        if ethertype in (ETHERTYPE_IPV4, ETHERTYPE_ARP):
            return XlatResult(drop=DropReason.IPV4_ON_SERVICE)
        return XlatResult(drop=DropReason.UNSUPPORTED_ETHERTYPE)

    @staticmethod
    def _arp(frame: bytes, eth: EthernetHeader) -> XlatResult:
        arp = parse_arp(frame[ETH_HEADER_LEN:])
        if isinstance(arp, Invalid):
            if arp.problem is Problem.TRUNCATED:
                return XlatResult(drop=DropReason.TRUNCATED)
            return XlatResult(drop=DropReason.ARP_UNSUPPORTED)
        return arp_to_ndp(eth, arp)
