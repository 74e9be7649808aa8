"""The address rule: IPv4 a.b.c.d <-> fe80::a.b.c.d (fe80::/96), plus a fixed table of
link-scope discovery groups. A rule, not a table of hosts: nothing grows with clients.
"""

from __future__ import annotations

import ipaddress

from cjb.common.packet.ipv4 import is_translatable_unicast

FE80_96 = b"\xfe\x80" + bytes(10)

# Link-scope discovery groups that cross the translator (docs/translator.md); every other
# multicast is dropped with a reason.
_GROUPS = {
    "224.0.0.251": "ff02::fb",  # mDNS (RFC 6762 §3)
    "239.255.255.250": "ff02::c",  # SSDP (UPnP Device Architecture §1.1)
    "224.0.0.252": "ff02::1:3",  # LLMNR (RFC 4795 §2)
}
GROUP_4TO6: dict[bytes, bytes] = {
    ipaddress.IPv4Address(v4).packed: ipaddress.IPv6Address(v6).packed for v4, v6 in _GROUPS.items()
}
GROUP_6TO4: dict[bytes, bytes] = {v6: v4 for v4, v6 in GROUP_4TO6.items()}

LIMITED_BROADCAST = b"\xff\xff\xff\xff"


def v4_to_v6(addr: bytes) -> bytes:
    return FE80_96 + addr


def v6_to_v4(addr: bytes) -> bytes | None:
    """The embedded IPv4 address, or None when `addr` is not in fe80::/96 form."""
    if addr[:12] != FE80_96:
        return None
    return addr[12:]


def unicast_v4_to_v6(addr: bytes) -> bytes | None:
    return FE80_96 + addr if is_translatable_unicast(addr) else None


def unicast_v6_to_v4(addr: bytes) -> bytes | None:
    if addr[:12] != FE80_96:
        return None
    v4 = addr[12:]
    return v4 if is_translatable_unicast(v4) else None


def any_v4_to_v6(addr: bytes) -> bytes | None:
    """Unicast by the rule, or a mapped group (for packets quoted in ICMP errors)."""
    return unicast_v4_to_v6(addr) or GROUP_4TO6.get(addr)


def any_v6_to_v4(addr: bytes) -> bytes | None:
    return unicast_v6_to_v4(addr) or GROUP_6TO4.get(addr)
