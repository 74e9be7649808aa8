"""The control plane's config file: TOML with commented defaults, validated with pydantic.

`cjb gateway init` writes `TEMPLATE` (every default spelled out and explained); the server
reads it back with `load_settings`. Unknown keys are errors, so a typo never passes silently.
"""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cjb.common.config_file import ConfigFileError, describe_validation_error
from cjb.common.tunnel_mtu import DEFAULT_WIREGUARD_MTU, MIN_WIREGUARD_MTU


class SettingsError(ConfigFileError):
    """gateway.toml is missing or invalid; the message names the file and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiSettings(_Section):
    listen: str = "::"
    port: Annotated[int, Field(ge=1, le=65535)] = 8443
    nonce_requests_per_second: Annotated[float, Field(gt=0)] = 2.0
    nonce_burst: Annotated[int, Field(ge=1)] = 10
    max_outstanding_nonces: Annotated[int, Field(ge=16)] = 10_000
    nonces_per_source: Annotated[int, Field(ge=1)] = 64
    enroll_requests_per_second: Annotated[float, Field(gt=0)] = 10.0
    enroll_burst: Annotated[int, Field(ge=1)] = 100
    max_sources: Annotated[int, Field(ge=16, le=1_000_000)] = 4096


class OperatorSettings(_Section):
    listen: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8444
    failures_per_second: Annotated[float, Field(gt=0)] = 0.2
    failure_burst: Annotated[int, Field(ge=1)] = 5


class AuditSettings(_Section):
    max_rows: Annotated[int, Field(ge=100)] = 100_000
    max_age_days: Annotated[float, Field(gt=0)] = 365.0


class WireGuardSettings(_Section):
    endpoint: str = "gateway.example:51820"  # what appliances dial (underlay host:port)
    listen_port: Annotated[int, Field(ge=1, le=65535)] = 51820
    keepalive_seconds: Annotated[int, Field(ge=0, le=600)] = 25
    # Both ends' WireGuard interface MTU (sent in DeviceConfig); sized for the WAN path.
    mtu: Annotated[int, Field(ge=MIN_WIREGUARD_MTU, le=9000)] = DEFAULT_WIREGUARD_MTU


class OverlaySettings(_Section):
    prefix: ipaddress.IPv6Network = ipaddress.IPv6Network("fd63:6a62:77::/64")
    gateway: ipaddress.IPv6Address = ipaddress.IPv6Address("fd63:6a62:77::1")
    first_device: ipaddress.IPv6Address = ipaddress.IPv6Address("fd63:6a62:77::100")

    @model_validator(mode="after")
    def _inside(self) -> OverlaySettings:
        for what in ("gateway", "first_device"):
            if getattr(self, what) not in self.prefix:
                raise ValueError(f"overlay.{what} must lie inside overlay.prefix {self.prefix}")
        if self.gateway >= self.first_device:
            raise ValueError("overlay.first_device must be above overlay.gateway")
        return self


class TenantSettings(_Section):
    first_vni: Annotated[int, Field(ge=1, le=0xFFFFFF)] = 100
    vxlan_port: Annotated[int, Field(ge=1, le=65535)] = 4789


class EnrollmentSettings(_Section):
    certificate_days: Annotated[int, Field(ge=1, le=825)] = 30
    heartbeat_seconds: Annotated[int, Field(ge=5, le=3600)] = 30


class Settings(_Section):
    api: ApiSettings = ApiSettings()
    operator: OperatorSettings = OperatorSettings()
    audit: AuditSettings = AuditSettings()
    wireguard: WireGuardSettings = WireGuardSettings()
    overlay: OverlaySettings = OverlaySettings()
    tenants: TenantSettings = TenantSettings()
    enrollment: EnrollmentSettings = EnrollmentSettings()

    @model_validator(mode="after")
    def _apart(self) -> Settings:
        if self.operator.port == self.api.port:
            raise ValueError(
                "operator.port must differ from api.port: the operator API and /metrics "
                "have their own listener, apart from the devices'"
            )
        return self


TEMPLATE = """\
# CJB gateway control plane. Written by `cjb gateway init`; every value below is the default.
# Read by `cjb gateway serve`; unknown keys are refused.

[api]
# The internet-facing HTTPS listener: enrollment and device endpoints only.
listen = "{listen}"
port = {port}
# Rate limits and quotas are per source: an IPv4 address, or an IPv6 /64.
# Nonce requests allowed per second per source, and the burst above that rate.
nonce_requests_per_second = 2.0
nonce_burst = 10
# Bound on nonces held in memory; past it the oldest of the source holding most is forgotten.
max_outstanding_nonces = 10000
# Nonces one source may hold; past it its own oldest is forgotten (never another source's).
nonces_per_source = 64
# For POST /v1/enroll: every refusal is audited, so a flood must not fill the log.
enroll_requests_per_second = 10.0
enroll_burst = 100
# Sources each rate limiter remembers (least recently seen forgotten first).
max_sources = 4096

[operator]
# The operator API (/v1/operator/*) and /metrics: HTTPS on their own listener, loopback by
# default (reach it over SSH or a VPN). Never the same address and port as [api].
listen = "{operator_listen}"
port = {operator_port}
# Failed operator logins per source: the rate refills this many per second, up to the burst;
# past it the source gets 429 without a credential check. Every failure is audited.
failures_per_second = 0.2
failure_burst = 5

[audit]
# The audit log keeps at most this many rows and none older than max_age_days; the oldest
# are pruned first (counted: `cjb_audit_pruned_total`).
max_rows = 100000
max_age_days = 365

[wireguard]
# What appliances dial: the gateway's underlay address and WireGuard port, "host:port".
endpoint = "{endpoint}"
listen_port = 51820
keepalive_seconds = 25
# WireGuard interface MTU on the gateway and every appliance: path MTU - 80 (WireGuard over
# IPv6). 1420 fits a 1500-byte WAN path, even one that drops big packets without an ICMP
# answer; LAN packets up to mtu - 70 = 1350 bytes cross whole, bigger DF ones get
# fragmentation-needed. Lower it for PPPoE (1492 -> 1412); never below 1350.
mtu = 1420

[overlay]
# One ULA /64 (RFC 4193) inside WireGuard; the gateway is ::1, appliances from ::100 up.
prefix = "fd63:6a62:77::/64"
gateway = "fd63:6a62:77::1"
first_device = "fd63:6a62:77::100"

[tenants]
# VNIs (RFC 7348 §5, 24 bits) are allocated per tenant from here up.
first_vni = 100
vxlan_port = 4789

[enrollment]
# Validity of a device certificate; the appliance re-enrolls before it runs out.
certificate_days = 30
heartbeat_seconds = 30
"""


def render_template(
    listen: str,
    port: int,
    endpoint: str,
    operator_listen: str = "127.0.0.1",
    operator_port: int = 8444,
) -> str:
    text = TEMPLATE.format(
        listen=listen,
        port=port,
        endpoint=endpoint,
        operator_listen=operator_listen,
        operator_port=operator_port,
    )
    load_text(text, Path("<template>"))  # the template must always parse
    return text


def load_text(text: str, path: Path) -> Settings:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not TOML: {exc}") from None
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(path, "gateway settings", exc)) from None


def load_settings(path: Path) -> Settings:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SettingsError(
            f"{path}: no such file (run `cjb gateway init --state-dir DIR` first)"
        ) from None
    return load_text(text, path)
