"""Wire models of the enrollment and device API (pydantic, at the HTTP edge only).

Endpoints (HTTPS; JSON bodies; errors are `ErrorBody` with a 4xx/5xx status):

  POST /v1/enroll/nonce        -> NonceResponse                 (no auth; rate-limited)
  POST /v1/enroll              EnrollRequest -> EnrollResponse  (factory-key signature header)
  GET  /v1/device/config       -> DeviceConfig                  (mTLS: device certificate)
  POST /v1/device/heartbeat    Heartbeat -> HeartbeatResponse   (mTLS: device certificate)
  /v1/operator/..., /metrics   operator API, Prometheus text    (operator listener only,
                                                                 named bearer tokens)

Enrollment proof of possession (nonces, not clocks: docs/decisions/0006-enrollment.md): the
device asks for a fresh nonce, puts it in the EnrollRequest, and signs the exact request
body bytes with its factory Ed25519 key:
SIGNATURE_HEADER = base64(Ed25519.sign(ENROLL_SIGNING_CONTEXT + body)).
The gateway accepts each nonce once, within NONCE_TTL_SECONDS.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    model_serializer,
)

from cjb.common.tunnel_mtu import DEFAULT_WIREGUARD_MTU, MIN_WIREGUARD_MTU

PROTOCOL_VERSION: Literal[1] = 1
SIGNATURE_HEADER = "X-CJB-Signature"
ENROLL_SIGNING_CONTEXT = b"cjb-enroll-v1\x00"
NONCE_TTL_SECONDS = 120
MAX_REQUEST_BODY = 64 * 1024  # bytes; larger requests get 413

Serial = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
B64Key32 = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{43}=$")]  # 32 raw bytes
Nonce = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{43}$")]  # 32 bytes, b64url
ServiceType = Annotated[str, StringConstraints(pattern=r"^_[a-z0-9-]{1,15}\._(tcp|udp)$")]

# Device-supplied numbers are bounded so nothing downstream (SQLite INTEGER, float() in
# /metrics, JSON readers) meets a value it cannot hold: 2**53 is exact in a float and in
# JavaScript, far above any real uptime, counter or version.
MAX_WIRE_INT = 2**53 - 1
WireCount = Annotated[int, Field(ge=0, le=MAX_WIRE_INT)]
MAX_HEARTBEAT_COUNTERS = 256
COUNTER_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
CounterName = Annotated[str, StringConstraints(pattern=COUNTER_NAME.pattern)]

# C0 controls and DEL: CR/LF would split an SSDP header (UDA 1.1 §1.1.2, HTTP header rules),
# NUL and the rest have no business in DNS-SD names or TXT values (RFC 6763 §4.1, §6).
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def control_char(text: str) -> str | None:
    """The first control character in `text`, as an escape like "\\r", or None."""
    m = _CONTROL_CHARS.search(text)
    return None if m is None else repr(m.group())[1:-1]


def _no_control_chars(text: str) -> str:
    bad = control_char(text)
    if bad is not None:
        raise ValueError(f"contains the control character {bad} (C0 controls and DEL refused)")
    return text


NoControlChars = AfterValidator(_no_control_chars)


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _FromGateway(_Wire):
    """What the gateway answers the appliance with. Unknown fields are ignored, so a gateway
    upgraded with a new field keeps talking to appliances in the field (whose requests the
    gateway still checks strictly); a field whose value matters must be understood before
    a gateway sends anything but its default."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class ErrorBody(_Wire):
    error: str  # machine-readable code, e.g. "unknown-serial", "nonce-replayed"
    message: str  # what is wrong and, where it helps, how to fix it


class NonceResponse(_Wire):
    nonce: Nonce
    expires_in: int


class LanFacts(_Wire):
    """What the appliance learned about its LAN."""

    prefix: ipaddress.IPv4Network
    router: ipaddress.IPv4Address | None = None
    # A free address for the cloud services, found by ARP probing (RFC 5227 §2.1.1).
    service_address: ipaddress.IPv4Address
    lan_mtu: Annotated[int, Field(ge=576, le=9000)] = 1500


class EnrollRequest(_Wire):
    version: Literal[1] = PROTOCOL_VERSION
    serial: Serial
    factory_public_key: B64Key32  # Ed25519, raw 32 bytes, base64
    nonce: Nonce
    wireguard_public_key: B64Key32  # generated on first boot; the private key never leaves
    csr_pem: Annotated[
        str, StringConstraints(max_length=8192)
    ]  # device TLS key (ECDSA P-256), CN = serial
    lan: LanFacts


class CatalogService(_Wire):
    """A cloud service announced on the tenant's LAN (DNS-SD, RFC 6763; UPnP)."""

    instance: Annotated[str, StringConstraints(min_length=1, max_length=63), NoControlChars]
    service_type: ServiceType  # e.g. "_http._tcp"
    port: Annotated[int, Field(ge=1, le=65535)]
    txt: dict[
        Annotated[str, StringConstraints(max_length=255), NoControlChars],
        Annotated[str, StringConstraints(max_length=255), NoControlChars],
    ] = {}
    # e.g. "urn:schemas-upnp-org:device:MediaServer:1"
    upnp_device_type: Annotated[str, StringConstraints(max_length=255), NoControlChars] | None = (
        None
    )
    # e.g. "/upnp/description.xml"
    upnp_description_path: (
        Annotated[str, StringConstraints(max_length=255), NoControlChars] | None
    ) = None

    def control_char_field(self) -> str | None:
        """The first field holding a control character, for a guard at the point of use
        (an instance built without validation, e.g. `model_construct`, skips the checks)."""
        texts = [("instance", self.instance), ("service_type", self.service_type)]
        texts += [(f"txt[{k!r}]", k + v) for k, v in self.txt.items()]
        texts += [("upnp_device_type", self.upnp_device_type or "")]
        texts += [("upnp_description_path", self.upnp_description_path or "")]
        return next((name for name, text in texts if control_char(text) is not None), None)


class TunnelConfig(_FromGateway):
    vni: Annotated[int, Field(ge=1, le=16_777_215)]
    overlay_address: ipaddress.IPv6Address  # the appliance's address on the WireGuard overlay
    overlay_prefix_len: Annotated[int, Field(ge=48, le=128)] = 64
    gateway_overlay_address: ipaddress.IPv6Address  # VXLAN remote, inside WireGuard
    gateway_wireguard_public_key: B64Key32
    gateway_endpoint: str  # "host:port" of the gateway's WireGuard listener (underlay)
    keepalive_seconds: Annotated[int, Field(ge=0, le=600)] = 25
    vxlan_port: int = 4789
    # The WireGuard interface MTU, the same at both ends (common/tunnel_mtu.py). Left off the
    # wire at its default: images from before this field forbid unknown fields.
    wireguard_mtu: Annotated[int, Field(ge=MIN_WIREGUARD_MTU, le=9000)] = DEFAULT_WIREGUARD_MTU

    @model_serializer(mode="wrap")
    def _omit_default_mtu(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if self.wireguard_mtu == DEFAULT_WIREGUARD_MTU:
            data.pop("wireguard_mtu", None)
        return data


class DeviceConfig(_FromGateway):
    config_version: int  # bumps whenever anything below changes
    tenant: str
    tunnel: TunnelConfig
    service_ipv4: ipaddress.IPv4Address  # what LAN clients use for the cloud services
    cloud_macs: list[str] = []  # MACs of the service host links (unicast allowed across the WAN)
    catalog: list[CatalogService] = []
    heartbeat_seconds: Annotated[int, Field(ge=5, le=3600)] = 30


class EnrollResponse(_FromGateway):
    device_certificate_pem: str  # signed by the gateway CA; client cert for /v1/device/*
    ca_certificate_pem: str  # the gateway CA, for verifying the HTTPS server from now on
    config: DeviceConfig


class Heartbeat(_Wire):
    serial: Serial
    config_version: WireCount
    uptime_seconds: WireCount
    tunnel_up: bool
    last_handshake_age_seconds: WireCount | None = None
    counters: Annotated[dict[CounterName, WireCount], Field(max_length=MAX_HEARTBEAT_COUNTERS)] = {}
    lan: LanFacts | None = None


class HeartbeatResponse(_FromGateway):
    config_version: int  # newer than the appliance's: fetch /v1/device/config


class InventoryRecord(_Wire):
    """One flashed unit, as `cjb image personalise` prints it and `cjb gateway device import`
    reads it (one JSON object per line)."""

    serial: Serial
    factory_public_key: B64Key32
    tenant: str | None = None
    model: str = "cjb-appliance"
