"""WireGuard state as plain frozen values: what should be (spec) and what is (status).

Keys are the base64 form of the raw 32 bytes (as `wg genkey` prints and as
common.control.protocol.B64Key32 carries them). Private keys are excluded from `repr`, so a
logged or printed spec never shows one.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class WireGuardError(Exception):
    """A WireGuard operation failed; the message names the interface and the fix."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A peer's UDP endpoint: an IP literal (names are resolved by the caller) and a port."""

    address: Address
    port: int

    def __str__(self) -> str:
        # UAPI and `wg` both write IPv6 endpoints in brackets.
        if self.address.version == 6:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """ "[fd00::1]:51820" or "192.0.2.1:51820" (IP literals only)."""
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit():
            raise WireGuardError(f"endpoint {text!r}: expected ADDRESS:PORT")
        host = host.removeprefix("[").removesuffix("]")
        host = host.split("%", 1)[0]  # a zone on a link-local endpoint is not ours to keep
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise WireGuardError(
                f"endpoint {text!r}: {host!r} is not an IP address (resolve names first)"
            ) from None
        number = int(port)
        if not 0 < number < 65536:
            raise WireGuardError(f"endpoint {text!r}: port out of range")
        return cls(address, number)


@dataclass(frozen=True, slots=True)
class PeerSpec:
    public_key: str
    allowed_ips: tuple[Network, ...] = ()
    # None: leave whatever the peer roamed to (a gateway learns its appliances' endpoints).
    endpoint: Endpoint | None = None
    keepalive: int = 0  # persistent keepalive seconds; 0 = off


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    private_key: str = field(repr=False)
    listen_port: int | None = None  # None: whatever the device has (random on creation)
    peers: tuple[PeerSpec, ...] = ()

    def peer(self, public_key: str) -> PeerSpec | None:
        for p in self.peers:
            if p.public_key == public_key:
                return p
        return None


@dataclass(frozen=True, slots=True)
class PeerStatus:
    public_key: str
    allowed_ips: tuple[Network, ...] = ()
    endpoint: Endpoint | None = None
    keepalive: int = 0
    last_handshake: float | None = None  # seconds since the epoch; None: never
    rx_bytes: int = 0
    tx_bytes: int = 0

    def handshake_age(self, now: float) -> float | None:
        return None if self.last_handshake is None else max(0.0, now - self.last_handshake)


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    private_key: str | None = field(default=None, repr=False)
    listen_port: int = 0
    peers: tuple[PeerStatus, ...] = ()

    def peer(self, public_key: str) -> PeerStatus | None:
        for p in self.peers:
            if p.public_key == public_key:
                return p
        return None
