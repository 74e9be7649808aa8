"""The gateway's tenant registry (static for now): a JSON file validated with pydantic.

Errors name the file and the field, e.g. `gw.json: tenants.acme.vni: ...`. The data plane
itself gets plain frozen values (`TenantSpec`), never pydantic models.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cjb.common import config_file as common_config

TENANT_NAME = r"^[a-z][a-z0-9-]{0,11}$"  # 12 chars max: "vx-" + name fits IFNAMSIZ


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


class UnderlayModel(_Model):
    address: ipaddress.IPv6Address | ipaddress.IPv4Address
    port: Annotated[int, Field(ge=1, le=65535)] = 4789
    device: str | None = None


class GatewayModel(_Model):
    underlay: UnderlayModel
    service_netns: str | None = None  # where service links' far ends live (None: here)
    state_dir: str = "/run/cjb-gateway"
    directory_file: str | None = None  # tenant directory for the service host
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


@dataclass(frozen=True, slots=True)
class TenantSpec:
    name: str
    vni: int
    appliance: ipaddress.IPv4Address | ipaddress.IPv6Address
    service_ipv4: ipaddress.IPv4Address
    lan_mtu: int
    native_ipv6: bool
    service_ifname: str

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
        """fe80::<service IPv4> (DESIGN §1), the service host's only address on the link."""
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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def from_model(path: Path, model: GatewayModel) -> GatewayConfig:
    state_dir = Path(model.state_dir)
    tenants = tuple(
        TenantSpec(
            name=name,
            vni=t.vni,
            appliance=t.appliance,
            service_ipv4=t.service_ipv4,
            lan_mtu=t.lan_mtu,
            native_ipv6=t.native_ipv6,
            service_ifname=t.service_ifname or name,
        )
        for name, t in sorted(model.tenants.items())
    )
    return GatewayConfig(
        path=path,
        underlay_address=model.underlay.address,
        underlay_port=model.underlay.port,
        underlay_device=model.underlay.device,
        service_netns=model.service_netns,
        state_dir=state_dir,
        directory_file=Path(model.directory_file or state_dir / "tenants.json"),
        tenants=tenants,
    )


def load(path: Path) -> GatewayConfig:
    return from_model(path, read_model(path))
