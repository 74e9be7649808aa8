"""nftables VNI binding: VNI X is accepted only from tenant X's appliance underlay address.

VXLAN has no authentication (RFC 7348 §7): without this, any appliance could inject frames
into another tenant's segment by writing that tenant's VNI. The VNI sits in the VXLAN
header right after the 8-byte UDP header: flags(8) reserved(24) VNI(24) reserved(8), i.e.
bits 96..119 from the start of the transport header (`@th,96,24`, RFC 7348 §5).

Each tenant's broadcast and multicast frames are rate-limited here too (`group_limit`): the
inner Ethernet destination follows the VXLAN header, so its I/G bit (IEEE 802, the least
significant bit of the first octet) is bit 135 of the transport header (`@th,135,1`).
"""

from __future__ import annotations

from cjb.common.netlink.nft import NftTable
from cjb.gateway.dataplane.config import GatewayConfig

TABLE_FAMILY = "inet"
TABLE_NAME = "cjb_gw"
UNKNOWN = "unknown_vni"


def counter_name(kind: str, tenant: str) -> str:
    return f"{kind}_{tenant.replace('-', '_')}"


def binding_table(
    cfg: GatewayConfig, previous: dict[str, tuple[int, int]] | None = None
) -> NftTable:
    """The table; `previous` counter values carry over, since each apply replaces the table."""
    previous = previous or {}

    def counter(name: str) -> str:
        packets, nbytes = previous.get(name, (0, 0))
        return f"\tcounter {name} {{ packets {packets} bytes {nbytes} }}"

    counters = [counter(UNKNOWN)]
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
            "\t\ttype filter hook input priority filter - 10; policy accept;",
            f"\t\tudp dport {cfg.underlay_port} jump vxlan",
            "\t}",
            "\tchain vxlan {",
            *rules,
            "\t}",
        ]
    )
    return NftTable(TABLE_FAMILY, TABLE_NAME, body)


def tenant_counters(raw: dict[str, tuple[int, int]], tenant: str) -> dict[str, int]:
    ok = raw.get(counter_name("ok", tenant), (0, 0))
    spoof = raw.get(counter_name("spoof", tenant), (0, 0))
    flood = raw.get(counter_name("flood", tenant), (0, 0))
    return {"vxlan_accepted": ok[0], "vni_spoofed": spoof[0], "group_limited": flood[0]}
