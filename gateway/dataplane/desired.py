"""Where the tenants come from: the JSON config, or the control plane's registry.

With a `registry` section the registry is the desired state (issue 4): one tenant per
enrolled, unrevoked device (`Registry.desired_tunnels()`), with the VNI and overlay address
the control plane allocated. `generation()` bumps on every change, so the daemon polls one
integer and re-reads only when it moved.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging

from cjb.gateway.dataplane.config import (
    ConfigFileError,
    GatewayConfig,
    TenantSpec,
    tenant_lan_mtu,
)

log = logging.getLogger("cjb.gateway")
DEFAULT_SERVICE_IPV4 = ipaddress.IPv4Address("192.168.0.100")


class RegistrySource:
    def __init__(self, base: GatewayConfig) -> None:
        from cjb.gateway.control.registry import Registry

        assert base.registry is not None
        if not base.registry.exists():
            # Registry.open would create an empty one: a typo must not look like "no tenants".
            raise ConfigFileError(
                f"{base.path}: registry.path {base.registry} does not exist; run "
                "`cjb gateway init --state-dir DIR` and point registry.path at DIR/registry.sqlite3"
            )
        self.base = base
        self.registry = Registry.open(base.registry)
        self.problems: list[str] = []

    def close(self) -> None:
        self.registry.close()

    def generation(self) -> int:
        return self.registry.generation()

    def config(self) -> GatewayConfig:
        tenants: dict[str, TenantSpec] = {}
        vnis: dict[int, str] = {}
        problems = []
        wg_mtu = self.base.wireguard.mtu if self.base.wireguard else None
        for tun in sorted(self.registry.desired_tunnels(), key=lambda x: (x.tenant, x.serial)):
            if tun.tenant in tenants:
                problems.append(
                    f"tenant {tun.tenant}: device {tun.serial} ignored, one appliance per tenant"
                )
                continue
            if tun.vni in vnis:
                problems.append(
                    f"tenant {tun.tenant}: VNI {tun.vni} already used by {vnis[tun.vni]}"
                )
                continue
            vnis[tun.vni] = tun.tenant
            tenants[tun.tenant] = TenantSpec(
                name=tun.tenant,
                vni=tun.vni,
                appliance=tun.overlay_address,
                service_ipv4=tun.service_ipv4 or DEFAULT_SERVICE_IPV4,
                lan_mtu=tenant_lan_mtu(tun.lan_mtu, wg_mtu),
                native_ipv6=self.base.registry_native_ipv6,
                service_ifname=tun.tenant,
                wireguard_public_key=tun.wireguard_public_key,
                userspace_io=self.base.userspace_io,
                fast_path=self.base.fast_path,
            )
        for p in problems:
            if p not in self.problems:
                log.error("registry: %s", p)
        self.problems = problems
        static = {t.name: t for t in self.base.tenants}
        merged = {**static, **tenants}
        return dataclasses.replace(self.base, tenants=tuple(merged[k] for k in sorted(merged)))
