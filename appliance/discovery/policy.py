"""What discovery traffic may cross the WAN: allow-list, rate limit, loop guard (sans-IO).

Plain values and functions only: time is a parameter, nothing here opens a socket.

Allow-list (both directions; DNS-SD service types per RFC 6763 §7, UPnP device/service
types per UDA §1.1.2 without the version). The default list carries what a cloud service
and a home LAN usefully share — web pages, printing and scanning, file shares, media — and
leaves out remote-control surfaces: SSH, VNC, HomeKit, and above all UPnP Internet Gateway
Device / WANIPConnection, which would let the cloud open ports on the customer's router.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

DEFAULT_SERVICE_TYPES: frozenset[str] = frozenset(
    {
        "_http._tcp",
        "_https._tcp",
        "_ipp._tcp",
        "_ipps._tcp",
        "_printer._tcp",
        "_pdl-datastream._tcp",
        "_scanner._tcp",
        "_uscan._tcp",
        "_uscans._tcp",
        "_smb._tcp",
        "_afpovertcp._tcp",
        "_nfs._tcp",
        "_webdav._tcp",
        "_webdavs._tcp",
        "_daap._tcp",
        "_airplay._tcp",
        "_raop._tcp",
        "_googlecast._tcp",
        "_device-info._tcp",
    }
)
DEFAULT_UPNP_TYPES: frozenset[str] = frozenset(
    {
        "urn:schemas-upnp-org:device:MediaServer",
        "urn:schemas-upnp-org:device:MediaRenderer",
        "urn:schemas-upnp-org:device:Printer",
        "urn:schemas-upnp-org:device:Basic",
        "urn:schemas-upnp-org:service:ContentDirectory",
        "urn:schemas-upnp-org:service:ConnectionManager",
        "urn:schemas-upnp-org:service:AVTransport",
        "urn:schemas-upnp-org:service:RenderingControl",
        "urn:schemas-upnp-org:service:PrintBasic",
        "urn:schemas-upnp-org:service:PrintEnhanced",
    }
)
META_QUERY = ("_services", "_dns-sd", "_udp", "local")  # RFC 6763 §9


@dataclass(frozen=True, slots=True)
class AllowList:
    service_types: frozenset[str] = DEFAULT_SERVICE_TYPES
    upnp_types: frozenset[str] = DEFAULT_UPNP_TYPES

    def service_type_allowed(self, service_type: str) -> bool:
        return service_type.lower() in self.service_types

    def upnp_type_allowed(self, urn: str) -> bool:
        """`urn:schemas-upnp-org:device:Printer:1` -> checks `...:device:Printer`."""
        base, _, version = urn.rpartition(":")
        return version.isdigit() and base in self.upnp_types


def labels_of(name: str) -> tuple[str, ...]:
    return tuple(label.lower() for label in name.rstrip(".").split("."))


def service_type_of(labels: tuple[str, ...]) -> str | None:
    """`_ipp._tcp` for `Printer._ipp._tcp.local`, `_sub._ipp._tcp.local`, `_ipp._tcp.local`."""
    for i in range(len(labels) - 1, 0, -1):
        if labels[i] in ("_tcp", "_udp") and labels[i - 1].startswith("_"):
            return f"{labels[i - 1]}.{labels[i]}"
    return None


def is_host_name(labels: tuple[str, ...]) -> bool:
    """A plain `.local` host name (RFC 6762 §3), not a DNS-SD service name."""
    return (
        len(labels) >= 2
        and labels[-1] == "local"
        and service_type_of(labels) is None
        and not any(label.startswith("_") for label in labels)
    )


class TokenBucket:
    """At most `rate` per second on average, `burst` at once (time passed in)."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate={rate} burst={burst}: rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp = now

    def take(self, now: float) -> bool:
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


@dataclass
class LoopGuard:
    """Names (and SSDP UUIDs) seen coming *from* the tunnel, and our own announcements:
    never sent back into it. Bounded (LRU) so a hostile peer cannot grow it."""

    capacity: int = 4096
    hold_seconds: float = 4500.0  # the longest DNS-SD TTL in common use (RFC 6762 §10)
    _seen: OrderedDict[str, float] = field(default_factory=OrderedDict)
    _permanent: frozenset[str] = frozenset()

    def set_permanent(self, keys: Iterable[str]) -> None:
        self._permanent = frozenset(k.lower().rstrip(".") for k in keys)

    def remember(self, key: str, now: float) -> None:
        key = key.lower().rstrip(".")
        self._seen[key] = now + self.hold_seconds
        self._seen.move_to_end(key)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)

    def seen(self, key: str, now: float) -> bool:
        key = key.lower().rstrip(".")
        if key in self._permanent:
            return True
        until = self._seen.get(key)
        if until is None:
            return False
        if until < now:
            del self._seen[key]
            return False
        return True
