"""What the appliance learns about the customer's LAN before enrolling: the prefix and router
(from the bridge's address and the default route, through common/netlink) and a free service
address (ARP probing, RFC 5227)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cjb.appliance.arp_probe import Prober, ProbeState, Timing, candidates
from cjb.common.netlink.spec import Interface


class LanError(Exception):
    """The LAN is not ready (no address yet, no free address); the message says what."""


class LanView(Protocol):
    def addresses(self, ns: str | None, name: str) -> set[Interface]: ...

    def default_router(
        self, ns: str | None, dev: str | None = None
    ) -> ipaddress.IPv4Address | None: ...


@dataclass(frozen=True, slots=True)
class LanPlan:
    prefix: ipaddress.IPv4Network
    router: ipaddress.IPv4Address | None
    own: tuple[ipaddress.IPv4Address, ...]  # the appliance's addresses on the bridge


def read_lan(
    view: LanView,
    bridge: str,
    prefix: ipaddress.IPv4Network | None = None,
    router: ipaddress.IPv4Address | None = None,
) -> LanPlan:
    """The bridge's IPv4 prefix and router; `prefix`/`router` override what the kernel says
    (a bridge with no address of its own, as in the lab)."""
    own = sorted(a for a in view.addresses(None, bridge) if a.version == 4)
    if prefix is None:
        if not own:
            raise LanError(
                f"{bridge} has no IPv4 address yet (waiting for DHCP?); or set lan_prefix "
                "in the appliance config"
            )
        prefix = ipaddress.IPv4Network(own[0].network)
    if router is None:
        router = view.default_router(None, bridge)
    return LanPlan(prefix, router, tuple(ipaddress.IPv4Address(a.ip) for a in own))


def preferred_address(
    prefix: ipaddress.IPv4Network, host: int | None
) -> ipaddress.IPv4Address | None:
    """Host number `host` inside `prefix` (100 -> 192.168.0.100 in 192.168.0.0/24)."""
    if host is None or not 0 < host < prefix.num_addresses - 1:
        return None
    return prefix.network_address + host


def find_service_address(
    plan: LanPlan,
    preferred_host: int | None,
    probe: Callable[[list[ipaddress.IPv4Address]], Prober],
) -> ipaddress.IPv4Address:
    exclude = list(plan.own) + ([plan.router] if plan.router is not None else [])
    order = candidates(plan.prefix, preferred_address(plan.prefix, preferred_host), exclude)
    prober = probe(order)
    if prober.state is not ProbeState.FREE or prober.result is None:
        raise LanError(f"no free service address in {plan.prefix}: {prober.describe()}")
    return prober.result


def scaled(timing: Timing, scale: float) -> Timing:
    """RFC 5227 timings multiplied by `scale` (tests and labs use < 1)."""
    return Timing(
        probe_wait=timing.probe_wait * scale,
        probe_num=timing.probe_num,
        probe_min=timing.probe_min * scale,
        probe_max=timing.probe_max * scale,
        announce_wait=timing.announce_wait * scale,
        max_conflicts=timing.max_conflicts,
        rate_limit_interval=timing.rate_limit_interval * scale,
    )
