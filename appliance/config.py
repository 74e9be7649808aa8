"""The appliance agent's static config file (enrollment replaces it in a later issue)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from cjb.common.config_file import ConfigFileError, load_json_model

IfName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,15}$")]


class ApplianceConfigError(ConfigFileError):
    """Missing or invalid appliance config file."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TunnelModel(_Model):
    name: IfName = "cjb-vx0"
    vni: Annotated[int, Field(ge=1, le=0xFFFFFF)]
    local: ipaddress.IPv6Address | ipaddress.IPv4Address
    remote: ipaddress.IPv6Address | ipaddress.IPv4Address  # the gateway's underlay address
    port: Annotated[int, Field(ge=1, le=65535)] = 4789
    underlay: IfName | None = None
    mtu: Annotated[int, Field(ge=1280, le=9000)] = 1500


class ApplianceModel(_Model):
    bridge: IfName = "br-lan"
    lan_ports: tuple[IfName, ...] = ()  # existing LAN NICs to put on the bridge
    bridge_ipv6: bool = False  # the agent's own stack stays off the customer LAN by default
    tunnel: TunnelModel
    state_dir: str = "/run/cjb-appliance"
    check_interval: Annotated[float, Field(gt=0, le=60)] = 1.0


def load(path: Path) -> ApplianceModel:
    return load_json_model(
        path,
        ApplianceModel,
        what="appliance config",
        missing_hint="pass --config FILE",
        error=ApplianceConfigError,
    )
