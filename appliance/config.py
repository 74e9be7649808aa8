"""The appliance agent's config file (JSON, all fields optional but `tunnel` in static mode).

Two modes:
  static     `tunnel` is given: the issue-3 agent (bridge + a fixed VXLAN port), kept for
             labs that do not enroll yet.
  enrolled   no `tunnel`: read the factory identity under `root` (common/control/identity.py
             layout), enroll with the gateway, build the tunnel it configures. A flashed
             image needs no config file at all: every default fits it.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from cjb.common.config_file import ConfigFileError, load_json_model

IfName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,15}$")]
DEFAULT_CONFIG = Path("/etc/cjb/appliance.json")


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


class FilterModel(_Model):
    enabled: bool = True
    group_pps: Annotated[int, Field(ge=1, le=1_000_000)] = 100  # per class, packets/s
    group_burst: Annotated[int, Field(ge=1, le=1_000_000)] = 200
    ndp: bool = True  # Neighbor Solicitations cross (for the native IPv6 path)


class ApplianceModel(_Model):
    bridge: IfName = "br-lan"
    lan_ports: tuple[IfName, ...] = ()  # existing LAN NICs to put on the bridge
    bridge_ipv6: bool = False  # the agent's own stack stays off the customer LAN by default
    tunnel: TunnelModel | None = None  # static mode when given
    state_dir: str = "/run/cjb-appliance"  # runtime status (status.json)
    check_interval: Annotated[float, Field(gt=0, le=60)] = 1.0

    # -- enrolled mode ------------------------------------------------------------------
    root: str = "/"  # identity layout root: <root>/etc/cjb/..., <root>/var/lib/cjb/
    wan: IfName | None = None  # the underlay device; None: the routing table decides
    tunnel_port: IfName = "cjb-vx0"
    # wireguard: VXLAN inside WireGuard (tunnel_wireguard.py); plain-vxlan: VXLAN straight
    # over the underlay, unencrypted, for labs and tests only.
    tunnel_builder: Literal["plain-vxlan", "wireguard"] = "wireguard"
    lan_mtu: Annotated[int, Field(ge=576, le=9000)] = 1500
    lan_prefix: ipaddress.IPv4Network | None = None  # override: the bridge has no address
    lan_router: ipaddress.IPv4Address | None = None
    preferred_service_host: Annotated[int, Field(ge=1)] | None = 100  # .100, tried first
    arp_probe_scale: Annotated[float, Field(gt=0, le=10)] = 1.0  # RFC 5227 timings x this
    filter: FilterModel = FilterModel()
    # Drop by default what reaches the appliance itself from its WAN; VXLAN only from the
    # gateway, inside WireGuard (appliance/wan_input.py).
    wan_input: bool = True
    discovery: bool = True  # run the Bonjour/UPnP relay (appliance/discovery) when enrolled
    http_timeout: Annotated[float, Field(gt=0, le=120)] = 10.0
    backoff_base: Annotated[float, Field(gt=0)] = 1.0
    backoff_cap: Annotated[float, Field(gt=0)] = 300.0

    @property
    def static(self) -> bool:
        return self.tunnel is not None


def load(path: Path) -> ApplianceModel:
    return load_json_model(
        path,
        ApplianceModel,
        what="appliance config",
        missing_hint="pass --config FILE",
        error=ApplianceConfigError,
    )


def load_or_default(path: Path | None) -> ApplianceModel:
    """`path` when given; else /etc/cjb/appliance.json if present; else the defaults."""
    if path is not None:
        return load(path)
    if DEFAULT_CONFIG.exists():
        return load(DEFAULT_CONFIG)
    return ApplianceModel()
