"""The enrolled agent's LAN facts: the prefix, the router and the service address, learned
by probing (RFC 5227) before enrolling, or read back after a restart without probing."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

from cjb.appliance.arp_probe import Prober
from cjb.appliance.config import ApplianceModel
from cjb.appliance.lan import LanError, LanView, find_service_address, read_lan
from cjb.appliance.lifecycle import Failure, FailureKind
from cjb.common.control.protocol import DeviceConfig, LanFacts
from cjb.common.netlink.kernel import NetlinkError

log = logging.getLogger("cjb.appliance")


def learn_lan(
    cfg: ApplianceModel,
    kernel: LanView,
    probe: Callable[[list[ipaddress.IPv4Address]], Prober],
) -> LanFacts | Failure:
    """Read the bridge's LAN and probe for a free service address."""
    try:
        plan = read_lan(kernel, cfg.bridge, cfg.lan_prefix, cfg.lan_router)
        log.info("probing for a free service address in %s (RFC 5227)", plan.prefix)
        address = find_service_address(plan, cfg.preferred_service_host, probe)
    except (LanError, NetlinkError, OSError) as exc:
        return Failure(FailureKind.LAN, str(exc))
    log.info("LAN %s router %s, service address %s", plan.prefix, plan.router, address)
    return LanFacts(
        prefix=plan.prefix, router=plan.router, service_address=address, lan_mtu=cfg.lan_mtu
    )


def lan_without_probing(
    cfg: ApplianceModel, kernel: LanView, config: DeviceConfig
) -> LanFacts | None:
    """After a restart: the LAN facts for heartbeats, with the service address the gateway
    confirmed (probing again would find our own cloud answering for it)."""
    try:
        plan = read_lan(kernel, cfg.bridge, cfg.lan_prefix, cfg.lan_router)
    except (LanError, NetlinkError, OSError):
        return None
    return LanFacts(
        prefix=plan.prefix,
        router=plan.router,
        service_address=config.service_ipv4,
        lan_mtu=cfg.lan_mtu,
    )
