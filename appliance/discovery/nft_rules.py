"""The kernel half of the discovery gate: nftables bridge rules that keep discovery UDP
from crossing between the LAN ports and the tunnel port by itself.

With these rules every mDNS/SSDP frame (either port 5353/1900, IPv4 or IPv6) reaches the
other side only through the userspace gate (`gate.py`), which applies the allow-list, the
rate limit and the loop guard, and sends what it allows straight out of the other port
(AF_PACKET transmit on a port device is not bridge-forwarded, so these rules do not see it).

The `output` chain matters for loop prevention: the relay's own announcements leave the
appliance's stack through the bridge device, and the bridge would flood them to the tunnel
port too; they belong on the LAN only.

Engineer B's WAN filter owns the appliance's bridge table; these lines are meant to be
placed at the top of its forward and output chains (or applied as this separate table, as
the tests do: a drop in any base chain is final).
"""

from __future__ import annotations

TABLE = "cjb_discovery"
DISCOVERY_PORTS = "{ 5353, 1900 }"


def forward_rules(tunnel_ifname: str) -> list[str]:
    t = tunnel_ifname
    return [
        f'oifname "{t}" udp dport {DISCOVERY_PORTS} counter drop',
        f'oifname "{t}" udp sport {DISCOVERY_PORTS} counter drop',
        f'iifname "{t}" udp dport {DISCOVERY_PORTS} counter drop',
        f'iifname "{t}" udp sport {DISCOVERY_PORTS} counter drop',
    ]


def output_rules(tunnel_ifname: str) -> list[str]:
    t = tunnel_ifname
    return [
        f'oifname "{t}" udp dport {DISCOVERY_PORTS} counter drop',
        f'oifname "{t}" udp sport {DISCOVERY_PORTS} counter drop',
    ]


def discovery_table(tunnel_ifname: str) -> str:
    """A standalone `nft -f -` script: the bridge table with both chains."""
    fwd = "\n".join(f"\t\t{r}" for r in forward_rules(tunnel_ifname))
    out = "\n".join(f"\t\t{r}" for r in output_rules(tunnel_ifname))
    return (
        f"table bridge {TABLE} {{}}\n"
        f"delete table bridge {TABLE}\n"
        f"table bridge {TABLE} {{\n"
        "\tchain forward {\n\t\ttype filter hook forward priority filter - 5; policy accept;\n"
        f"{fwd}\n\t}}\n"
        "\tchain output {\n\t\ttype filter hook output priority filter - 5; policy accept;\n"
        f"{out}\n\t}}\n"
        "}\n"
    )
