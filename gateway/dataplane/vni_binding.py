"""The gateway host's nftables input policy, with the VNI binding in it.

Input drops by default (counted) and admits only: loopback, replies to the host's own flows
(ct established/related), WireGuard's port, the enrollment/device API's TCP ports, the ICMPv6
that Neighbor Discovery and Path MTU Discovery need (RFC 4890 §4.4.1), ICMPv4
fragmentation-needed (RFC 1191), echo requests from inside WireGuard (rate-limited), and
VXLAN. With the WireGuard transport VXLAN is accepted
only from the WireGuard interface (an underlay packet to the VXLAN port is counted as
`vxlan_outside_tunnel` and dropped); in the plain trusted-link mode it comes from the
underlay. Either way it then meets the VNI binding: VNI X only from tenant X's appliance.
The same binding is enforced in tc by the VXLAN guard (cjb.common.vxlan_guard), which
`nft flush ruleset` cannot remove; this table is the visible, counted second layer.

VXLAN has no authentication (RFC 7348 §7): without this, any appliance could inject frames
into another tenant's segment by writing that tenant's VNI. The VNI sits in the VXLAN
header right after the 8-byte UDP header: flags(8) reserved(24) VNI(24) reserved(8), i.e.
bits 96..119 from the start of the transport header (`@th,96,24`, RFC 7348 §5).

Each tenant's broadcast and multicast frames are rate-limited here too (`group_limit`): the
inner Ethernet destination follows the VXLAN header, so its I/G bit (IEEE 802, the least
significant bit of the first octet) is bit 135 of the transport header (`@th,135,1`).
"""

from __future__ import annotations

from cjb.common.netlink.nft import HOST_ICMPV6_TYPES, NftTable, named_counter
from cjb.gateway.dataplane.config import GatewayConfig

TABLE_FAMILY = "inet"
TABLE_NAME = "cjb_gw"
UNKNOWN = "unknown_vni"
OUTSIDE_TUNNEL = "vxlan_outside_tunnel"
INPUT_DROPPED = "input_dropped"


def counter_name(kind: str, tenant: str) -> str:
    return f"{kind}_{tenant.replace('-', '_')}"


def binding_table(
    cfg: GatewayConfig, previous: dict[str, tuple[int, int]] | None = None
) -> NftTable:
    """The table; `previous` counter values carry over, since each apply replaces the table."""
    previous = previous or {}

    def counter(name: str) -> str:
        return named_counter(name, previous)

    counters = [counter(UNKNOWN), counter(OUTSIDE_TUNNEL), counter(INPUT_DROPPED)]
    rules = []
    lim = cfg.group_limit
    over = f"limit rate over {lim.per_second}/second burst {lim.burst} packets"
    for t in cfg.tenants:
        ok, spoof = counter_name("ok", t.name), counter_name("spoof", t.name)
        flood = counter_name("flood", t.name)
        counters += [counter(ok), counter(spoof), counter(flood)]
        family = "ip6" if t.appliance.version == 6 else "ip"
        bound = f"@th,96,24 {t.vni} {family} saddr {t.appliance}"
        # One rule per tenant, so each has its own token bucket.
        rules.append(f"\t\t{bound} @th,135,1 1 {over} counter name {flood} drop")
        rules.append(f"\t\t{bound} counter name {ok} accept")
        rules.append(f"\t\t@th,96,24 {t.vni} counter name {spoof} drop")
    rules.append(f"\t\tcounter name {UNKNOWN} drop")
    body = "\n".join(
        [
            *counters,
            "\tchain input {",
            *input_rules(cfg),
            "\t}",
            "\tchain vxlan {",
            *rules,
            "\t}",
        ]
    )
    return NftTable(TABLE_FAMILY, TABLE_NAME, body)


def input_rules(cfg: GatewayConfig) -> list[str]:
    port, host = cfg.underlay_port, cfg.host_input
    vxlan = []
    if cfg.wireguard is not None:
        vxlan.append(
            f'\t\tiifname != "{cfg.wireguard.ifname}" udp dport {port} '
            f"counter name {OUTSIDE_TUNNEL} drop"
        )
    vxlan.append(f"\t\tudp dport {port} jump vxlan")
    if not host.drop_others:
        # The operator runs their own host firewall: only VXLAN is ours to police.
        return ["\t\ttype filter hook input priority filter - 10; policy accept;", *vxlan]
    admit = []
    if cfg.wireguard is not None:
        admit.append(f"\t\tudp dport {cfg.wireguard.listen_port} accept")
        # An appliance pinging the gateway through its tunnel (a diagnostic inside the
        # trust boundary); never from the underlay.
        admit.append(
            f'\t\tiifname "{cfg.wireguard.ifname}" icmpv6 type echo-request '
            "limit rate 10/second accept"
        )
    if host.tcp_ports:
        admit.append(f"\t\ttcp dport {{ {', '.join(map(str, host.tcp_ports))} }} accept")
    return [
        "\t\ttype filter hook input priority filter - 10; policy drop;",
        '\t\tiifname "lo" accept',
        *vxlan,  # before conntrack: VXLAN is judged per packet, never as a "reply"
        "\t\tct state established,related accept",
        *admit,
        f"\t\ticmpv6 type {{ {', '.join(HOST_ICMPV6_TYPES)} }} accept",
        "\t\ticmp type destination-unreachable icmp code frag-needed accept",
        f"\t\tcounter name {INPUT_DROPPED} drop",
    ]


def host_counters(raw: dict[str, tuple[int, int]]) -> dict[str, int]:
    return {name: raw.get(name, (0, 0))[0] for name in (OUTSIDE_TUNNEL, INPUT_DROPPED, UNKNOWN)}


def tenant_counters(
    raw: dict[str, tuple[int, int]], tenant: str, guard_spoofed: int = 0
) -> dict[str, int]:
    """`guard_spoofed`: the tc guard's count for this VNI (it drops forgeries before
    nftables sees them); `vni_spoofed` is both layers together."""
    ok = raw.get(counter_name("ok", tenant), (0, 0))
    spoof = raw.get(counter_name("spoof", tenant), (0, 0))
    flood = raw.get(counter_name("flood", tenant), (0, 0))
    return {
        "vxlan_accepted": ok[0],
        "vni_spoofed": spoof[0] + guard_spoofed,
        "group_limited": flood[0],
    }
