"""MTU arithmetic of the tunnel: VXLAN over IPv6 inside WireGuard over the WAN
(docs/decisions/0003-service-mtu.md).

    WAN path MTU  >= WireGuard interface MTU + 80   (IPv6 40 + UDP 8 + data header 16 + tag 16)
    WireGuard MTU >= LAN IP packet + 70              (IPv6 40 + UDP 8 + VXLAN 8 + Ethernet 14)

A WAN path may silently drop what it cannot carry (a PMTU black hole, RFC 2923 §2.1: ICMP
filtered, PPPoE or DS-Lite hops below the link's MTU), and a VTEP must not fragment VXLAN
packets (RFC 7348 §4.3). So the WireGuard interface is sized for the path, never for the
LAN: the default assumes the Internet's 1,500-byte path and gives WireGuard's usual 1,420,
which carries LAN IP packets of up to 1,350 bytes. Bigger DF packets from the LAN get
fragmentation-needed from the appliance's bridged VXLAN port (RFC 1191; Linux answers for
bridged tunnels), and the gateway gives the tenant's service links the same 1,350 (+20 when
translated), so the service host's TCP MSS fits and no full-size packet is ever lost.
"""

from __future__ import annotations

WIREGUARD_OVER_IPV6 = 40 + 8 + 16 + 16
VXLAN_OVER_IPV6 = 40 + 8 + 8 + 14
IPV6_MIN_MTU = 1280  # RFC 8200 §5: every link, the tenant's native IPv6 link included
DEFAULT_WAN_PATH_MTU = 1500
DEFAULT_WIREGUARD_MTU = DEFAULT_WAN_PATH_MTU - WIREGUARD_OVER_IPV6  # 1420
MIN_WIREGUARD_MTU = IPV6_MIN_MTU + VXLAN_OVER_IPV6  # 1350: below it, no 1280-byte LAN packet
# A translated packet's IPv6 header (40 bytes, RFC 8200 §3) replaces the IPv4 header without
# options (20 bytes, RFC 791 §3.1): RFC 7915 §5.1 / §4.1.
IPV6_HEADER_GROWTH = 40 - 20


def service_mtu_for(lan_mtu: int) -> int:
    """The service link's MTU for a tenant whose LAN MTU is `lan_mtu`: room for a full-size
    LAN IPv4 packet after translation, so the translator never has to fragment one."""
    return lan_mtu + IPV6_HEADER_GROWTH


def wireguard_mtu_for_path(path_mtu: int) -> int:
    """The WireGuard interface MTU whose packets fit a WAN path of `path_mtu` bytes."""
    return path_mtu - WIREGUARD_OVER_IPV6


def lan_mtu_through(wireguard_mtu: int, lan_mtu: int) -> int:
    """The largest LAN IP packet the tunnel carries whole: the LAN's own MTU, or less when
    VXLAN inside a `wireguard_mtu` interface cannot hold a full LAN packet."""
    return min(lan_mtu, wireguard_mtu - VXLAN_OVER_IPV6)
