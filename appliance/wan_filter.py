"""What may cross from the customer's LAN into the tunnel: an nftables bridge-family table.

The tunnel port is one port of the LAN bridge; the bridge's forward hook runs once per
output port (also for flooded frames), so matching `oifname <tunnel>` sees exactly what would
cross the WAN. Allowed:

  unicast   to a cloud MAC (DeviceConfig.cloud_macs), or IPv4/ARP for the service address;
            with no cloud MACs known, any unicast the bridge forwards to the tunnel port
  group     (broadcast/multicast, each class rate-limited to `group_pps`):
            ARP whose target is the service address (RFC 826 requests are broadcast),
            discovery multicast: mDNS 224.0.0.251 / ff02::fb :5353 (RFC 6762),
            SSDP 239.255.255.250 / ff02::c :1900 (UPnP DA 1.1 §1), LLMNR 224.0.0.252 /
            ff02::1:3 :5355 (RFC 4795), and Neighbor Solicitations (RFC 4861 §7.2.2, for the
            native IPv6 path; switch off with ndp=False)
  the rest  stays on the LAN (counted)

Frames from the tunnel are counted, not filtered: the gateway filters its side.
Applied with `nft -f -` as one transaction; counters carry over across re-applies.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cjb.common.netlink.nft import NftTable, named_counter

TABLE_FAMILY = "bridge"
TABLE_NAME = "cjb_wan"
COUNTERS = (
    "unicast_ok",
    "arp_ok",
    "discovery_ok",
    "ndp_ok",
    "group_limited",
    "lan_only",
    "from_wan",
)

# (family, group, udp port): link-scope discovery protocols allowed across the WAN.
DISCOVERY: tuple[tuple[str, str, int], ...] = (
    ("ip", "224.0.0.251", 5353),
    ("ip6", "ff02::fb", 5353),
    ("ip", "239.255.255.250", 1900),
    ("ip6", "ff02::c", 1900),
    ("ip", "224.0.0.252", 5355),
    ("ip6", "ff02::1:3", 5355),
)


@dataclass(frozen=True, slots=True)
class FilterSpec:
    tunnel_port: str
    service_ipv4: ipaddress.IPv4Address
    cloud_macs: Sequence[str] = ()
    group_pps: int = 100  # per class (ARP, discovery, NDP), packets per second
    group_burst: int = 200
    ndp: bool = True


def filter_table(spec: FilterSpec, previous: dict[str, tuple[int, int]] | None = None) -> NftTable:
    previous = previous or {}

    def counter(name: str) -> str:
        return named_counter(name, previous)

    svc = spec.service_ipv4
    port = spec.tunnel_port
    limit = f"limit rate {spec.group_pps}/second burst {spec.group_burst} packets"
    macs = sorted({m.lower() for m in spec.cloud_macs})
    if macs:
        unicast = [
            f"\t\tether daddr {{ {', '.join(macs)} }} counter name unicast_ok accept",
            f"\t\tether type ip ip daddr {svc} counter name unicast_ok accept",
            f"\t\tether type arp arp daddr ip {svc} counter name unicast_ok accept",
            "\t\tcounter name lan_only drop",
        ]
    else:
        # The gateway named no cloud MACs: we cannot tell cloud from LAN unicast, so let the
        # bridge's forwarding database decide (it sends unicast to the tunnel port only for
        # MACs learned behind it, or while flooding an unknown one). Degraded, not broken.
        unicast = ["\t\tcounter name unicast_ok accept"]
    group = [f"\t\tether type arp arp daddr ip {svc} jump arp_limited"]
    for family, address, udp_port in DISCOVERY:
        ether = "ip" if family == "ip" else "ip6"
        group.append(
            f"\t\tether type {ether} {family} daddr {address} udp dport {udp_port} "
            "jump discovery_limited"
        )
    if spec.ndp:
        group.append("\t\tether type ip6 icmpv6 type nd-neighbor-solicit jump ndp_limited")
    group.append("\t\tcounter name lan_only drop")

    def limited(name: str, ok: str) -> list[str]:
        return [
            f"\tchain {name} {{",
            f"\t\t{limit} counter name {ok} accept",
            "\t\tcounter name group_limited drop",
            "\t}",
        ]

    body = "\n".join(
        [
            *(counter(name) for name in COUNTERS),
            "\tchain forward {",
            "\t\ttype filter hook forward priority filter; policy accept;",
            f'\t\toifname "{port}" jump to_wan',
            f'\t\tiifname "{port}" counter name from_wan',
            "\t}",
            "\tchain to_wan {",
            # The I/G bit of the destination MAC: 0 = unicast (IEEE 802 §8.2).
            "\t\tether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00 jump unicast",
            "\t\tjump group",
            "\t}",
            "\tchain unicast {",
            *unicast,
            "\t}",
            "\tchain group {",
            *group,
            "\t}",
            *limited("arp_limited", "arp_ok"),
            *limited("discovery_limited", "discovery_ok"),
            *limited("ndp_limited", "ndp_ok"),
        ]
    )
    return NftTable(TABLE_FAMILY, TABLE_NAME, body)
