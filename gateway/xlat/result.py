"""What the translator core returns: frames to emit, or a drop with a named reason."""

from __future__ import annotations

import enum
from typing import NamedTuple


class _FastHashEnum(enum.Enum):
    # Members are singletons, so identity hashing is exact; Enum's own __hash__ is a
    # Python-level call, paid four times per frame by the counters.
    __hash__ = object.__hash__


class Direction(_FastHashEnum):
    """Which way a frame travels through the translator."""

    TO_SERVICE = "to-service"  # LAN side (IPv4, ARP) -> service link (IPv6 fe80::/96, NDP)
    TO_LAN = "to-lan"  # service link -> LAN side


class Side(_FastHashEnum):
    """The port a produced frame leaves on."""

    LAN = "lan"
    SERVICE = "service"


class DropReason(_FastHashEnum):
    """Every reason a frame can be dropped; each has a counter."""

    TRUNCATED = "truncated"  # shorter than its headers claim
    MALFORMED = "malformed"  # a header field is invalid (version, IHL, lengths)
    BAD_IP_CHECKSUM = "bad-ip-checksum"
    UNSUPPORTED_ETHERTYPE = "unsupported-ethertype"  # VLAN tags, LLDP, ...
    NATIVE_IPV6_ON_LAN = "native-ipv6-on-lan"  # IPv6 from the LAN: the native path's job
    IPV4_ON_SERVICE = "ipv4-on-service"  # IPv4 arriving on the service link
    ADDRESS_NOT_TRANSLATABLE = "address-not-translatable"  # not fe80::/96, or unusable IPv4
    BROADCAST = "broadcast"
    MULTICAST_NOT_MAPPED = "multicast-not-mapped"  # not in the discovery group table
    SOURCE_ROUTE = "source-route"  # unexpired IPv4 source route (RFC 7915 §4.1); ICMP sent
    ROUTING_HEADER = "routing-header"  # segments left != 0 (RFC 7915 §5.1); ICMPv6 sent
    BAD_EXTENSION_HEADER = "bad-extension-header"
    FRAGMENT_INVALID = "fragment-invalid"
    TOO_BIG = "too-big"  # DF set and larger than the MTU; ICMP error sent back
    ICMP_UNTRANSLATABLE = "icmp-untranslatable"  # no counterpart type/code (RFC 7915 §4.2, §5.2)
    ICMP_BAD_CHECKSUM = "icmp-bad-checksum"
    ICMP_FRAGMENTED = "icmp-fragmented"  # checksum cannot be rebuilt without reassembly
    ICMP_ERROR_IN_ERROR = "icmp-error-in-error"  # an ICMP error quoting an ICMP error
    UDP_ZERO_CHECKSUM = "udp-zero-checksum"  # policy "drop", or a fragment (RFC 7915 §4.5)
    ARP_UNSUPPORTED = "arp-unsupported"  # not Ethernet/IPv4 ARP, or an unknown opcode
    NDP_INVALID = "ndp-invalid"  # RFC 4861 §7.1 validity checks failed
    NDP_NO_ARP_EQUIVALENT = "ndp-no-arp-equivalent"  # RS, RA, redirect
    MLD = "mld"  # MLD has no IPv4 counterpart on this link
    IGMP = "igmp"  # IGMP has no IPv6 counterpart here (RFC 7915 §4.2)
    INTERNAL_ERROR = "internal-error"  # a translator bug: counted, kept in Translator.errors


# Emit and XlatResult are NamedTuples: as immutable as a frozen dataclass, and cheaper to
# build, which counts at hundreds of thousands of frames per second.
class Emit(NamedTuple):
    """One frame to send, and the port to send it on."""

    side: Side
    frame: bytes


class XlatResult(NamedTuple):
    """Frames to emit (possibly several: fragments, or an ICMP error back) and/or a drop.

    A drop that triggers an ICMP error carries both: the reason and the error frame.
    """

    emits: tuple[Emit, ...] = ()
    drop: DropReason | None = None
