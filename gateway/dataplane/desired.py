"""Where the tenants come from: the JSON config, or the control plane's registry.

With a `registry` section the registry is the desired state: one tenant per enrolled,
unrevoked device, with the VNI and overlay address the control plane allocated.
`generation()` bumps on every change, so the daemon polls one integer and re-reads only when
it moved. `registry.path` names either the API's read-only export (a `.json` file,
export/desired.json: the data plane runs as its own user and reads nothing else of the API's,
see gateway/control/statedir.py) or, for a single-user set-up, the SQLite registry itself.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
from pathlib import Path
from typing import Any

from cjb.gateway.control.registry import TunnelSpec
from cjb.gateway.dataplane.config import (
    ConfigFileError,
    GatewayConfig,
    TenantSpec,
    tenant_lan_mtu,
)

log = logging.getLogger("cjb.gateway")
DEFAULT_SERVICE_IPV4 = ipaddress.IPv4Address("192.168.0.100")


class _ExportFile:
    """export/desired.json as the registry's two read calls (generation, desired_tunnels);
    re-parsed only when the file changed (the API replaces it atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._doc: dict[str, Any] = {"generation": -1, "tunnels": []}

    def _load(self) -> dict[str, Any]:
        st = self.path.stat()
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key != self._seen:
            doc = json.loads(self.path.read_text())
            if not isinstance(doc, dict) or not isinstance(doc.get("tunnels"), list):
                raise ConfigFileError(f"{self.path}: not a desired-state export")
            self._doc, self._seen = doc, key
        return self._doc

    def generation(self) -> int:
        return int(self._load()["generation"])

    def desired_tunnels(self) -> list[TunnelSpec]:
        out = []
        for t in self._load()["tunnels"]:
            out.append(
                TunnelSpec(
                    tenant=str(t["tenant"]),
                    serial=str(t["serial"]),
                    vni=int(t["vni"]),
                    overlay_address=ipaddress.IPv6Address(t["overlay_address"]),
                    wireguard_public_key=str(t["wireguard_public_key"]),
                    service_ipv4=ipaddress.IPv4Address(t["service_ipv4"])
                    if t.get("service_ipv4")
                    else None,
                    lan_mtu=int(t["lan_mtu"]),
                )
            )
        return out

    def close(self) -> None:
        pass


class RegistrySource:
    def __init__(self, base: GatewayConfig) -> None:
        from cjb.gateway.control.registry import Registry

        assert base.registry is not None
        if not base.registry.exists():
            # Registry.open would create an empty one: a typo must not look like "no tenants".
            raise ConfigFileError(
                f"{base.path}: registry.path {base.registry} does not exist; run "
                "`cjb gateway init --state-dir DIR` and point registry.path at "
                "DIR/export/desired.json"
            )
        self.base = base
        self.registry: Registry | _ExportFile = (
            _ExportFile(base.registry)
            if base.registry.suffix == ".json"
            else Registry.open(base.registry)
        )
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
