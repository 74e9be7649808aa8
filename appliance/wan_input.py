"""What may reach the appliance itself from its WAN: an nftables input policy plus the
VXLAN guard in tc (cjb.common.vxlan_guard), the layer `nft flush ruleset` cannot remove.

Input drops by default (counted as `wan_dropped`) and admits: loopback; the customer LAN
side (the bridge: the discovery relay, a local console); VXLAN only from the gateway's
address, and with WireGuard only from inside the WireGuard interface (anything to the VXLAN
port from elsewhere is `vxlan_outside_tunnel`, from another source `vxlan_unbound`); replies
to the appliance's own flows (enrollment over HTTPS, WireGuard to the gateway, DNS);
DHCP answers (RFC 2131 §4.1 ports 67 -> 68, RFC 8415 §7.2 547 -> 546); the ICMPv6 that
Neighbor Discovery and PMTU discovery need (RFC 4890 §4.4.1); ICMPv4 fragmentation-needed
(RFC 1191).

The guard (tc ingress, on every WAN-side link): with WireGuard, no VXLAN at all from the
underlay; plain VXLAN (trusted link): VNI only from the gateway's underlay address. Its
programs stay attached when the agent stops, so a flushed ruleset or a dead agent never
lets forged VXLAN onto the customer LAN.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from dataclasses import dataclass

from cjb.common.netlink import Kernel, NetlinkError, nft
from cjb.common.netlink.nft import HOST_ICMPV6_TYPES, NftTable, named_counter
from cjb.common.vxlan_guard import GuardError, VxlanGuard, attach, underlay_links

log = logging.getLogger("cjb.appliance")

TABLE_FAMILY = "inet"
TABLE_NAME = "cjb_wan_in"
COUNTERS = ("vxlan_outside_tunnel", "vxlan_unbound", "wan_dropped")


@dataclass(frozen=True, slots=True)
class InputSpec:
    vni: int
    vxlan_port: int
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address  # the only VXLAN source
    tunnel_ifname: str | None  # the WireGuard interface; None: plain VXLAN (trusted link)
    lan_ifnames: tuple[str, ...]  # the customer side (the bridge)


def input_table(spec: InputSpec, previous: dict[str, tuple[int, int]] | None = None) -> NftTable:
    previous = previous or {}

    def counter(name: str) -> str:
        return named_counter(name, previous)

    port = spec.vxlan_port
    family = "ip6" if spec.gateway.version == 6 else "ip"
    vxlan = []
    if spec.tunnel_ifname is not None:
        vxlan.append(
            f'\t\tiifname != "{spec.tunnel_ifname}" udp dport {port} '
            "counter name vxlan_outside_tunnel drop"
        )
    vxlan += [
        f"\t\tudp dport {port} {family} saddr {spec.gateway} accept",
        f"\t\tudp dport {port} counter name vxlan_unbound drop",
    ]
    lan = ", ".join(f'"{name}"' for name in spec.lan_ifnames)
    body = "\n".join(
        [
            *(counter(name) for name in COUNTERS),
            "\tchain input {",
            "\t\ttype filter hook input priority filter - 10; policy drop;",
            '\t\tiifname "lo" accept',
            *vxlan,  # before the LAN and conntrack rules: VXLAN is judged on every packet
            *([f"\t\tiifname {{ {lan} }} accept"] if lan else []),
            "\t\tct state established,related accept",
            "\t\tudp sport 67 udp dport 68 accept",
            "\t\tip6 saddr fe80::/10 udp sport 547 udp dport 546 accept",
            f"\t\ticmpv6 type {{ {', '.join(HOST_ICMPV6_TYPES)} }} accept",
            "\t\ticmp type destination-unreachable icmp code frag-needed accept",
            "\t\tcounter name wan_dropped drop",
            "\t}",
        ]
    )
    return NftTable(TABLE_FAMILY, TABLE_NAME, body)


class WanInput:
    """Keeps the input table and the guard in place; call `ensure` every tick."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self._guard: VxlanGuard | None = None
        self.guard_error: str | None = None
        self._spec: InputSpec | None = None
        self._counters: dict[str, tuple[int, int]] = {}

    def ensure(self, spec: InputSpec, exclude: tuple[str, ...]) -> list[str]:
        """`exclude`: links that are not WAN-side (LAN ports, tunnel port, bridge)."""
        errors = []
        try:
            errors += self._ensure_guard(spec, exclude)
        except (GuardError, NetlinkError, OSError) as exc:
            self.guard_error = f"{exc}; VXLAN from the WAN is kept out by nftables alone"
            errors.append(f"vxlan guard: {self.guard_error}")
        try:
            if spec == self._spec and TABLE_NAME in nft.tables(None, TABLE_FAMILY):
                self._counters = nft.counters(None, TABLE_FAMILY, TABLE_NAME)
            else:
                nft.apply_table(None, input_table(spec, self._counters))
                self._spec = spec
                self._counters = nft.counters(None, TABLE_FAMILY, TABLE_NAME)
        except NetlinkError as exc:
            errors.append(f"wan input: {exc}")
        return errors

    def _ensure_guard(self, spec: InputSpec, exclude: tuple[str, ...]) -> list[str]:
        if self._guard is None:
            if self.guard_error is not None:
                return [f"vxlan guard: {self.guard_error}"]  # tried once: no libbpf/object
            try:
                self._guard = VxlanGuard()
            except GuardError as exc:
                log.warning("%s; VXLAN from the WAN is kept out by nftables alone", exc)
                raise
            self._guard.configure(spec.vxlan_port, {spec.vni: spec.gateway})
        elif self._spec != spec:
            self._guard.configure(spec.vxlan_port, {spec.vni: spec.gateway})
        role = "wan" if spec.tunnel_ifname is not None else "trusted"
        skip = (*exclude, *spec.lan_ifnames, *((spec.tunnel_ifname,) if spec.tunnel_ifname else ()))
        for change in attach(
            self.kernel, None, underlay_links(self.kernel, None, skip), self._guard.program(role)
        ):
            log.info("vxlan guard: %s", change)
        return []

    def remove(self) -> None:
        self._spec = None
        try:
            nft.delete_table(None, TABLE_FAMILY, TABLE_NAME)
        except NetlinkError as exc:
            log.warning("removing the WAN input table: %s", exc)

    def counters(self) -> dict[str, int]:
        out = {name if name.startswith("wan_") else f"wan_{name}": packets
               for name, (packets, _) in self._counters.items()}  # fmt: skip
        if self._guard is not None:
            with contextlib.suppress(OSError):
                out.update({f"guard_{k}": v for k, v in self._guard.counters().items()})
        return out
