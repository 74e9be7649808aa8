"""The gateway's tenant registry (static for now): a JSON file validated with pydantic.

Errors name the file and the field, e.g. `gw.json: tenants.acme.vni: ...`. The data plane
itself gets plain frozen values (`TenantSpec`), never pydantic models.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cjb.common import config_file as common_config
from cjb.common.private_file import atomic_write
from cjb.common.tunnel_mtu import DEFAULT_WIREGUARD_MTU, MIN_WIREGUARD_MTU, lan_mtu_through

TENANT_NAME = r"^[a-z][a-z0-9-]{0,11}$"  # 12 chars max: "vx-" + name fits IFNAMSIZ
# How the userspace worker reads and writes its ports: "packet" = AF_PACKET, one
# wire frame per syscall, offloads off; "packet-vnet" = AF_PACKET with PACKET_VNET_HDR,
# offloads on, TCP as 64 KB GSO super-frames translated once each (gateway/xlat/gso.py).
UserspaceIO = Literal["packet", "packet-vnet"]
# Who translates the common case: "kernel" (the default) = the tc-eBPF fast path on the
# tenant's ports (gateway/dataplane/bpf), the userspace worker only for the rest, and the
# worker for everything where the object cannot be built or loaded (status says why);
# "userspace" = the worker for everything.
FastPathMode = Literal["kernel", "userspace"]
WG_KEY = r"^[A-Za-z0-9+/]{43}=$"  # base64 of 32 raw bytes (common.control.protocol.B64Key32)


class ConfigFileError(common_config.ConfigFileError):
    """The gateway config file is missing or invalid."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TenantModel(_Model):
    vni: Annotated[int, Field(ge=1, le=0xFFFFFF)]  # 24-bit VNI (RFC 7348 §5)
    appliance: ipaddress.IPv6Address | ipaddress.IPv4Address  # underlay address bound to the VNI
    service_ipv4: ipaddress.IPv4Address = ipaddress.IPv4Address("192.168.0.100")
    lan_mtu: Annotated[int, Field(ge=1280, le=9000)] = 1500
    native_ipv6: bool = True
    service_ifname: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,15}$")] | None = None
    userspace_io: UserspaceIO | None = None  # None: the gateway-wide `userspace_io`
    fast_path: FastPathMode | None = None  # None: the gateway-wide `fast_path`
    # WireGuard transport: the appliance's public key; `appliance` is then its overlay address.
    wireguard_public_key: Annotated[str, Field(pattern=WG_KEY)] | None = None


class WireGuardModel(_Model):
    """The gateway's one WireGuard interface; VXLAN runs inside it over the overlay.

    With this section, `underlay` may be left out: the VXLAN underlay is the overlay
    address here, and every tenant's `appliance` is its overlay address.
    """

    # Unique on the machine (wireguard-go's socket directory is shared by all namespaces).
    ifname: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,14}$")]
    private_key_file: str  # base64, mode 0600 (`cjb gateway init` writes wireguard/private.key)
    listen_port: Annotated[int, Field(ge=1, le=65535)] = 51820
    address: ipaddress.IPv6Interface = ipaddress.IPv6Interface("fd63:6a62:77::1/64")
    # Sized for the WAN path, not the LAN (common/tunnel_mtu.py): the default fits a
    # 1,500-byte path; tenants' links then carry LAN packets up to `mtu` - 70 bytes. The
    # appliances get the same value in their DeviceConfig (gateway.toml [wireguard] mtu).
    mtu: Annotated[int, Field(ge=MIN_WIREGUARD_MTU, le=9000)] = DEFAULT_WIREGUARD_MTU
    log_file: str | None = None  # wireguard-go's own log (errors only)


class RegistryModel(_Model):
    """Take tenants from the control plane's registry instead of `tenants`: one tenant per
    enrolled, unrevoked device (`Registry.desired_tunnels()`)."""

    # The API's read-only export STATE/export/desired.json (or, single-user, registry.sqlite3)
    path: str
    native_ipv6: bool = True  # give every registry tenant a native IPv6 link too


class UnderlayModel(_Model):
    address: ipaddress.IPv6Address | ipaddress.IPv4Address
    port: Annotated[int, Field(ge=1, le=65535)] = 4789
    device: str | None = None


class GroupLimit(_Model):
    """Broadcast/multicast frames a tenant's appliance may send into the gateway, per tenant.

    The appliance's own WAN filter already caps them (3 classes x 100/s, bursts of 200:
    appliance/wan_filter.py); this is the gateway's guard against an appliance that does
    not, so one tenant cannot load everyone's translator workers. Above the appliance's
    caps, so a well-behaved one never meets it.
    """

    per_second: Annotated[int, Field(ge=1, le=1_000_000)] = 400
    burst: Annotated[int, Field(ge=1, le=1_000_000)] = 800


class HostInputModel(_Model):
    """The gateway host's input policy (gateway/dataplane/vni_binding.py).

    `drop_others`: drop what is not WireGuard, these TCP ports, ND/PMTU ICMP, replies to the
    host's own flows or (bound) VXLAN; false leaves the rest to the operator's firewall.
    The default ports: SSH, so an operator is not locked out, and the API's default port.
    """

    drop_others: bool = True
    tcp_ports: tuple[Annotated[int, Field(ge=1, le=65535)], ...] = (22, 8443)


class GatewayModel(_Model):
    underlay: UnderlayModel | None = None  # required unless `wireguard` is set
    wireguard: WireGuardModel | None = None
    registry: RegistryModel | None = None
    service_netns: str | None = None  # where service links' far ends live (None: here)
    state_dir: str = "/run/cjb-gateway"
    directory_file: str | None = None  # tenant directory for the service host
    userspace_io: UserspaceIO = "packet-vnet"
    fast_path: FastPathMode = "kernel"
    group_limit: GroupLimit = GroupLimit()
    host_input: HostInputModel = HostInputModel()
    tenants: dict[Annotated[str, Field(pattern=TENANT_NAME)], TenantModel] = {}

    @field_validator("tenants")
    @classmethod
    def _unique(cls, tenants: dict[str, TenantModel]) -> dict[str, TenantModel]:
        seen: dict[int, str] = {}
        ifnames: dict[str, str] = {}
        for name, t in tenants.items():
            if t.vni in seen:
                raise ValueError(f"tenant {name!r} reuses vni {t.vni} of tenant {seen[t.vni]!r}")
            seen[t.vni] = name
            ifname = t.service_ifname or name
            if ifname in ifnames:
                raise ValueError(f"tenant {name!r} reuses service_ifname {ifname!r}")
            ifnames[ifname] = name
        return tenants

    @model_validator(mode="after")
    def _transport(self) -> GatewayModel:
        if self.underlay is None and self.wireguard is None:
            raise ValueError("set `underlay` (plain VXLAN) or `wireguard` (VXLAN inside WireGuard)")
        if self.wireguard is not None:
            for name, t in self.tenants.items():
                if t.wireguard_public_key is None:
                    raise ValueError(
                        f"tenant {name!r}: wireguard_public_key is required with `wireguard`"
                    )
                if t.appliance not in self.wireguard.address.network:
                    raise ValueError(
                        f"tenant {name!r}: appliance {t.appliance} must be an overlay address "
                        f"in {self.wireguard.address.network} with `wireguard`"
                    )
        return self


@dataclass(frozen=True, slots=True)
class WireGuardSpec:
    ifname: str
    private_key_file: Path
    listen_port: int
    address: ipaddress.IPv6Interface
    mtu: int
    log_file: Path | None


@dataclass(frozen=True, slots=True)
class TenantSpec:
    name: str
    vni: int
    appliance: ipaddress.IPv4Address | ipaddress.IPv6Address
    service_ipv4: ipaddress.IPv4Address
    lan_mtu: int
    native_ipv6: bool
    service_ifname: str
    wireguard_public_key: str | None = None
    userspace_io: UserspaceIO = "packet-vnet"
    fast_path: FastPathMode = "kernel"

    # Gateway-side port names: fixed prefixes, so operators can read `ip link` at a glance.
    @property
    def tunnel_port(self) -> str:
        return f"vx-{self.name}"

    @property
    def service_port(self) -> str:
        return f"sl-{self.name}"

    @property
    def native_port(self) -> str:
        return f"nl-{self.name}"

    @property
    def native_ifname(self) -> str:
        """The native IPv6 link's name on the service host."""
        return native_ifname(self.service_ifname)

    @property
    def service_address(self) -> ipaddress.IPv6Interface:
        """fe80::<service IPv4>, the service host's only address on the link
        (docs/architecture.md)."""
        return ipaddress.IPv6Interface(f"fe80::{_hex_pair(self.service_ipv4)}/64")


def native_ifname(service_ifname: str) -> str:
    """The native IPv6 link's service-host name for a tenant's service link name."""
    return f"n-{service_ifname}"[:15]


def _hex_pair(v4: ipaddress.IPv4Address) -> str:
    n = int(v4)
    return f"{n >> 16:x}:{n & 0xFFFF:x}"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    path: Path
    underlay_address: ipaddress.IPv4Address | ipaddress.IPv6Address
    underlay_port: int
    underlay_device: str | None
    service_netns: str | None
    state_dir: Path
    directory_file: Path
    tenants: tuple[TenantSpec, ...]
    wireguard: WireGuardSpec | None = None
    registry: Path | None = None
    registry_native_ipv6: bool = True
    userspace_io: UserspaceIO = "packet-vnet"  # gateway-wide default, e.g. for registry tenants
    fast_path: FastPathMode = "kernel"  # gateway-wide default, e.g. for registry tenants
    group_limit: GroupLimit = field(default_factory=lambda: GroupLimit())
    host_input: HostInputModel = field(default_factory=lambda: HostInputModel())

    @property
    def status_file(self) -> Path:
        return self.state_dir / "status.json"

    def tenant(self, name: str) -> TenantSpec:
        for t in self.tenants:
            if t.name == name:
                return t
        raise KeyError(name)


def read_model(path: Path) -> GatewayModel:
    return common_config.load_json_model(
        path,
        GatewayModel,
        what="gateway config",
        missing_hint="create it, or pass --config",
        error=ConfigFileError,
    )


def write_model(path: Path, model: GatewayModel) -> None:
    """Write atomically (rename), so a running gateway never reads half a file."""
    text = json.dumps(model.model_dump(mode="json", exclude_none=True), indent=2) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text, 0o644)


def tenant_lan_mtu(lan_mtu: int, wireguard_mtu: int | None) -> int:
    """The LAN packet size a tenant's gateway links carry: the LAN's MTU over plain VXLAN
    (its underlay must hold it + 70), at most what fits the WireGuard interface inside it."""
    return lan_mtu if wireguard_mtu is None else lan_mtu_through(wireguard_mtu, lan_mtu)


def from_model(path: Path, model: GatewayModel) -> GatewayConfig:
    state_dir = Path(model.state_dir)
    tenants = tuple(
        TenantSpec(
            name=name,
            vni=t.vni,
            appliance=t.appliance,
            service_ipv4=t.service_ipv4,
            lan_mtu=tenant_lan_mtu(t.lan_mtu, model.wireguard.mtu if model.wireguard else None),
            native_ipv6=t.native_ipv6,
            service_ifname=t.service_ifname or name,
            wireguard_public_key=t.wireguard_public_key,
            userspace_io=t.userspace_io or model.userspace_io,
            fast_path=t.fast_path or model.fast_path,
        )
        for name, t in sorted(model.tenants.items())
    )
    wg = None
    if model.wireguard is not None:
        w = model.wireguard
        wg = WireGuardSpec(
            ifname=w.ifname,
            private_key_file=Path(w.private_key_file),
            listen_port=w.listen_port,
            address=w.address,
            mtu=w.mtu,
            log_file=Path(w.log_file) if w.log_file else None,
        )
    if model.underlay is not None:
        underlay_address = model.underlay.address
        underlay_port, underlay_device = model.underlay.port, model.underlay.device
    else:
        assert wg is not None  # the model validator requires one of the two
        # VXLAN inside WireGuard: its underlay is the overlay (no lower device: the /64 on
        # the WireGuard interface routes it, and no lower-device MTU check applies).
        underlay_address, underlay_port, underlay_device = wg.address.ip, 4789, None
    return GatewayConfig(
        path=path,
        underlay_address=underlay_address,
        underlay_port=underlay_port,
        underlay_device=underlay_device,
        service_netns=model.service_netns,
        state_dir=state_dir,
        directory_file=Path(model.directory_file or state_dir / "tenants.json"),
        tenants=tenants,
        wireguard=wg,
        registry=Path(model.registry.path) if model.registry else None,
        registry_native_ipv6=model.registry.native_ipv6 if model.registry else True,
        userspace_io=model.userspace_io,
        fast_path=model.fast_path,
        group_limit=model.group_limit,
        host_input=model.host_input,
    )


def load(path: Path) -> GatewayConfig:
    return from_model(path, read_model(path))
