"""Peer sockaddr -> interface -> tenant. Never raises: bad or foreign input is an `Unknown`.

The scope ID (sin6_scope_id, RFC 3493 §3.3) of a link-local peer is the index of the
interface the packet came in on; on the service host each tenant has its own interface, so
the scope ID is the tenant key. Index -> name goes through an injected lookup (the adapter
passes `socket.if_indextoname`) behind a small cache: an entry older than `max_age` is
looked up again, and an index whose lookup fails (the interface is gone) is dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from cjb.service.directory import LinkKind, TenantDirectory

DEFAULT_MAX_AGE = 5.0
MAX_CACHE_ENTRIES = 4096


class UnknownReason(StrEnum):
    BAD_ADDRESS = "peer address is not an IPv6 sockaddr"
    NO_SCOPE = "peer has no scope id (not a link-local peer on a tenant link)"
    INTERFACE_GONE = "no interface has this scope id"
    NOT_IN_DIRECTORY = "interface is not in the tenant directory"


@dataclass(frozen=True, slots=True)
class Known:
    tenant: str
    ifname: str
    scope_id: int
    link: LinkKind
    peer_host: str
    peer_port: int

    @property
    def peer_text(self) -> str:
        """The peer in getnameinfo form, e.g. ``fe80::c0a8:a%t1``."""
        return f"{self.peer_host}%{self.ifname}"


@dataclass(frozen=True, slots=True)
class Unknown:
    reason: UnknownReason
    peer_host: str
    scope_id: int | None = None
    ifname: str | None = None

    @property
    def message(self) -> str:
        where = ""
        if self.ifname is not None:
            where = f" on interface {self.ifname}"
        elif self.scope_id:
            where = f" on interface index {self.scope_id}"
        return f"unknown tenant{where}: {self.reason.value}"


Resolution = Known | Unknown


class InterfaceNames:
    def __init__(
        self,
        index_to_name: Callable[[int], str],
        *,
        max_age: float = DEFAULT_MAX_AGE,
    ) -> None:
        self._lookup = index_to_name
        self._max_age = max_age
        self._cache: dict[int, tuple[str, float]] = {}

    def name(self, index: int, now: float) -> str | None:
        hit = self._cache.get(index)
        if hit is not None and now - hit[1] < self._max_age:
            return hit[0]
        try:
            name = self._lookup(index)
        except (OSError, ValueError, OverflowError):
            self._cache.pop(index, None)
            return None
        if len(self._cache) >= MAX_CACHE_ENTRIES and index not in self._cache:
            self._cache.clear()
        self._cache[index] = (name, now)
        return name

    def forget(self, index: int) -> None:
        self._cache.pop(index, None)

    def clear(self) -> None:
        self._cache.clear()


def split_sockaddr(sockaddr: object) -> tuple[str, int, int] | None:
    """(host without %zone, port, scope_id) of an AF_INET6 sockaddr, or None."""
    if not isinstance(sockaddr, tuple) or len(sockaddr) != 4:
        return None
    host, port, _flowinfo, scope_id = sockaddr
    if not isinstance(host, str) or not isinstance(port, int) or not isinstance(scope_id, int):
        return None
    # Python appends "%zone" to the host of scoped addresses; the integer is authoritative.
    return host.partition("%")[0], port, scope_id


def resolve_peer(
    sockaddr: object, directory: TenantDirectory, names: InterfaceNames, now: float
) -> Resolution:
    parts = split_sockaddr(sockaddr)
    if parts is None:
        host = sockaddr[0] if isinstance(sockaddr, tuple) and sockaddr else sockaddr
        return Unknown(UnknownReason.BAD_ADDRESS, str(host)[:64])
    host, port, scope_id = parts
    if scope_id <= 0:
        return Unknown(UnknownReason.NO_SCOPE, host)
    ifname = names.name(scope_id, now)
    if ifname is None:
        return Unknown(UnknownReason.INTERFACE_GONE, host, scope_id)
    binding = directory.binding(ifname)
    if binding is None:
        return Unknown(UnknownReason.NOT_IN_DIRECTORY, host, scope_id, ifname)
    return Known(binding.entry.tenant, ifname, scope_id, binding.link, host, port)
