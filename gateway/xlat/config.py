"""Translator configuration: plain frozen values (pydantic stays at the edges)."""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from cjb.common.tunnel_mtu import service_mtu_for

IPV6_MIN_MTU = 1280  # RFC 8200 §5
IPV4_MIN_MTU = 68  # RFC 791
HEADER_GROWTH = 20
DEFAULT_ICMP_SOURCE_V4 = ipaddress.IPv4Address("169.254.0.1")
DEFAULT_ICMP_SOURCE_V6 = ipaddress.IPv6Address(
    "fe80::a9fe:1"
)  # the same address, mapped  # IPv6 header (40) minus IPv4 header without options (20)


class UdpZeroChecksum(enum.Enum):
    """What to do with an IPv4 UDP datagram whose checksum is zero (RFC 7915 §4.5)."""

    COMPUTE = "compute"
    DROP = "drop"


class ConfigError(ValueError):
    """A translator setting is out of range; the message names the setting."""


@dataclass(frozen=True, slots=True)
class XlatConfig:
    lan_mtu: int = 1500
    service_mtu: int = service_mtu_for(1500)  # so translation never fragments a LAN packet
    # RFC 7915 §4.1 "lowest-ipv6-mtu": DF=0 packets that would exceed it are fragmented.
    # None means the service link MTU: on one link, the link is the whole IPv6 path.
    lowest_ipv6_mtu: int | None = None
    udp_zero_checksum: UdpZeroChecksum = UdpZeroChecksum.COMPUTE
    # Sources of ICMP errors the translator generates itself (RFC 7915 §4.1 source route,
    # packet too big, fragmentation needed). The IPv6 one must be in fe80::/96 form so the
    # error can be translated back if it ever loops.
    icmp_source_v4: ipaddress.IPv4Address = DEFAULT_ICMP_SOURCE_V4
    icmp_source_v6: ipaddress.IPv6Address = DEFAULT_ICMP_SOURCE_V6
    # MAC the translator's own ICMP errors come from (locally administered).
    translator_mac: bytes = bytes.fromhex("020000c7b001")

    def __post_init__(self) -> None:
        if not IPV4_MIN_MTU <= self.lan_mtu <= 65535:
            raise ConfigError(f"lan_mtu={self.lan_mtu}: must be between {IPV4_MIN_MTU} and 65535")
        if not IPV6_MIN_MTU <= self.service_mtu <= 65535:
            raise ConfigError(
                f"service_mtu={self.service_mtu}: must be between {IPV6_MIN_MTU} and 65535"
            )
        if self.lowest_ipv6_mtu is not None and not (
            IPV6_MIN_MTU <= self.lowest_ipv6_mtu <= self.service_mtu
        ):
            raise ConfigError(
                f"lowest_ipv6_mtu={self.lowest_ipv6_mtu}: must be between {IPV6_MIN_MTU} "
                f"and service_mtu ({self.service_mtu})"
            )
        if len(self.translator_mac) != 6:
            raise ConfigError("translator_mac: must be 6 bytes")

    @property
    def ipv6_fragment_threshold(self) -> int:
        return self.lowest_ipv6_mtu if self.lowest_ipv6_mtu is not None else self.service_mtu
