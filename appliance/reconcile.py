"""The enrolled agent's reconcilers: what the kernel should have, re-applied every tick.

The LAN bridge and its ports, the tunnel (through the `TunnelBuilder`), the WAN filter
(nftables), the WAN input policy and VXLAN guard, and the discovery relay's link. Each is
idempotent, so a removed or detached port, a flushed ruleset or a dead relay comes back
within one `check_interval`. Problems are collected in `errors` for the status file.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from cjb.appliance.config import ApplianceModel
from cjb.appliance.discovery_link import DiscoveryLink
from cjb.appliance.keys import DeviceKeys
from cjb.appliance.lan import LanView
from cjb.appliance.tunnel import TunnelBuilder, TunnelError, TunnelRequest, TunnelStatus
from cjb.appliance.wan_filter import TABLE_FAMILY, TABLE_NAME, FilterSpec, filter_table
from cjb.appliance.wan_input import InputSpec, WanInput
from cjb.common.control.protocol import DeviceConfig, EnrollResponse
from cjb.common.netlink import Bridge, Existing, Kernel, Link, Namespace, NetworkSpec, apply, nft
from cjb.common.netlink.kernel import NetlinkError

log = logging.getLogger("cjb.appliance")
OWNER = "appliance"
NO_IPV6 = (("ipv6.disable_ipv6", "1"),)


class AgentKernel(Kernel, LanView, Protocol):
    """What the agent needs from the kernel adapter (RealKernel has both halves)."""


def base_spec(cfg: ApplianceModel, adopt_bridge: bool = False) -> NetworkSpec:
    """The LAN bridge and its LAN ports; the tunnel port is the builder's.

    `adopt_bridge`: the bridge exists and is someone else's (systemd-networkd on the image,
    running DHCP on it): use it as it is, never touch its addresses.
    """
    bridge = (
        Link(cfg.bridge, Existing())
        if adopt_bridge
        else Link(cfg.bridge, Bridge(), sysctls=() if cfg.bridge_ipv6 else NO_IPV6)
    )
    links = [bridge]
    links += [
        Link(port, Existing(), master=cfg.bridge, offloads_off=True) for port in cfg.lan_ports
    ]
    return NetworkSpec(OWNER, (Namespace(None, tuple(links)),))


@dataclass
class Reconciler:
    cfg: ApplianceModel
    kernel: AgentKernel
    builder: TunnelBuilder
    keys: DeviceKeys
    discovery: DiscoveryLink
    wan_input: WanInput | None
    clock: Callable[[], float]
    tunnel: TunnelStatus | None = None
    errors: list[str] = field(default_factory=list)
    filter_counters: dict[str, tuple[int, int]] = field(default_factory=dict)
    _filter_spec: FilterSpec | None = None
    # What the last full tick told discovery.sync (config, LAN address, tunnel usable), so a
    # tick that only checks the fingerprint keeps the relay's timers running.
    _discovery_args: tuple[DeviceConfig, ipaddress.IPv4Address | None, bool] | None = None

    def tick(self, enrollment: EnrollResponse | None) -> None:
        """Re-apply everything the kernel should have (idempotent), read the counters."""
        self.errors = []
        self._discovery_args = None
        try:
            bridge = self.kernel.links(None).get(self.cfg.bridge)
            adopt = bridge is not None and bridge.alias != f"cjb:{OWNER}"
            for change in apply(self.kernel, base_spec(self.cfg, adopt)):
                log.info("apply: %s", change)
        except NetlinkError as exc:
            self.errors.append(f"bridge: {exc}")
        request = self.tunnel_request(enrollment)
        if request is None or enrollment is None:
            self.tunnel = None
            self.discovery.sync(self.clock(), None, None, False, False)
            return
        recreated = False
        try:
            for change in self.builder.ensure(request):
                log.info("tunnel: %s", change)
                recreated = recreated or f"add link {request.port_name}" in change
            self.tunnel = self.builder.status(request)
        except (TunnelError, NetlinkError, OSError) as exc:
            self.errors.append(f"tunnel: {exc}")
            self.tunnel = TunnelStatus(False, False, request.port_name, detail=str(exc))
        self._ensure_filter(enrollment)
        self._ensure_input(request)
        tunnel = self.tunnel
        args = (enrollment.config, self._own_lan_address(), tunnel.up and tunnel.on_bridge)
        self.discovery.sync(self.clock(), *args, recreated)
        self._discovery_args = args

    def resync_discovery(self, now: float) -> None:
        """Between full ticks: the relay's timers run on what the last full tick saw."""
        if self._discovery_args is not None:
            self.discovery.sync(now, *self._discovery_args, False)

    def refresh_counters(self, enrollment: EnrollResponse | None) -> bool:
        """The tunnel's status and the WAN filter's counters without re-applying anything;
        False when reading them failed (the caller repairs in full next)."""
        request = self.tunnel_request(enrollment)
        try:
            if request is not None:
                self.tunnel = self.builder.status(request)
            if self._filter_spec is not None:
                self.filter_counters = nft.counters(None, TABLE_FAMILY, TABLE_NAME)
        except (TunnelError, NetlinkError, OSError) as exc:
            log.info("counter refresh failed, repairing in full next tick: %s", exc)
            return False
        return True

    def healthy(self, enrollment: EnrollResponse | None) -> bool:
        """Nothing left to wait for: no errors, and (enrolled) the tunnel up on the bridge."""
        if self.errors:
            return False
        if enrollment is None:
            return True
        t = self.tunnel
        return t is not None and t.up and t.on_bridge

    def tunnel_request(self, enrollment: EnrollResponse | None) -> TunnelRequest | None:
        if enrollment is None:
            return None
        return TunnelRequest(
            config=enrollment.config.tunnel,
            wireguard_private_key_file=self.keys.wireguard_private_file,
            bridge=self.cfg.bridge,
            port_name=self.cfg.tunnel_port,
            mtu=self.cfg.lan_mtu,
            underlay=self.cfg.wan,
        )

    def reconnect(self, enrollment: EnrollResponse | None, reason: str) -> None:
        log.warning("reconnecting the tunnel: %s", reason)
        request = self.tunnel_request(enrollment)
        if request is None:
            return
        try:
            self.builder.reconnect(request)
        except (TunnelError, NetlinkError, OSError) as exc:
            # The next tick rebuilds what is missing; say why this attempt did not help.
            log.warning("reconnect failed: %s", exc)

    def teardown(self) -> None:
        """Not enrolled any more: tunnel, filter and relay go."""
        self._filter_spec = None
        self.discovery.stop("off: not enrolled")
        with contextlib.suppress(TunnelError, NetlinkError, OSError):
            self.builder.remove()
        with contextlib.suppress(NetlinkError):
            nft.delete_table(None, TABLE_FAMILY, TABLE_NAME)
        self.tunnel = None

    def _own_lan_address(self) -> ipaddress.IPv4Address | None:
        try:
            own = sorted(a for a in self.kernel.addresses(None, self.cfg.bridge) if a.version == 4)
        except NetlinkError:
            return None
        return ipaddress.IPv4Address(own[0].ip) if own else None

    def _ensure_input(self, request: TunnelRequest) -> None:
        """The WAN input policy and the VXLAN guard (wan_input.py), every tick: a flushed
        ruleset comes back within one tick, and the guard never left."""
        if self.wan_input is None:
            return
        try:
            ifname, gateway = self.builder.vxlan_source(request)
        except (TunnelError, OSError) as exc:
            self.errors.append(f"wan input: {exc}")
            return
        spec = InputSpec(
            vni=request.config.vni,
            vxlan_port=request.config.vxlan_port,
            gateway=gateway,
            tunnel_ifname=ifname,
            lan_ifnames=(self.cfg.bridge,),
        )
        exclude = (self.cfg.bridge, self.cfg.tunnel_port, *self.cfg.lan_ports)
        self.errors += self.wan_input.ensure(spec, exclude)

    def _ensure_filter(self, enrollment: EnrollResponse) -> None:
        if not self.cfg.filter.enabled:
            return
        config, f = enrollment.config, self.cfg.filter
        spec = FilterSpec(
            tunnel_port=self.cfg.tunnel_port,
            service_ipv4=config.service_ipv4,
            cloud_macs=tuple(config.cloud_macs),
            group_pps=f.group_pps,
            group_burst=f.group_burst,
            ndp=f.ndp,
        )
        try:
            if spec == self._filter_spec:
                self.filter_counters = nft.counters(None, TABLE_FAMILY, TABLE_NAME)
                return
        except NetlinkError:
            pass  # the table is gone: apply it again below
        try:
            nft.apply_table(None, filter_table(spec, self.filter_counters))
            self._filter_spec = spec
            self.filter_counters = nft.counters(None, TABLE_FAMILY, TABLE_NAME)
            log.info("WAN filter applied for %s", config.service_ipv4)
            if not spec.cloud_macs:
                log.warning(
                    "the gateway named no cloud MACs: all unicast the bridge forwards to the "
                    "tunnel may cross (broadcast/multicast are still filtered)"
                )
        except NetlinkError as exc:
            self.errors.append(f"filter: {exc}")
