"""Tenant-unique client addresses: one stable IPv6 address per (tenant, client), sans-IO.

Two tenants' clients can both be ``192.168.0.10``, so on the service host both are
``fe80::c0a8:a`` and only the scope id (the link) tells them apart. A server behind a proxy
never sees the scope id: the PROXY header has no room for it (`cjb.service.proxy_v2`). This
module gives each (tenant, client) pair an address of its own that an unmodified server can
route, match and log on.

Layout (a unique-local address, RFC 4193 §3.1, prefix fd00::/8)::

    | fd | tenant ID: 56 bits                        | the client's interface ID: 64 bits |
         SHA-256(b"cjb-tenant-prefix:" + tenant)[:7]   the low 64 bits of its link-local address

- Every tenant owns one /64, derived from its name alone: no table to hand out, the same
  tenant gets the same prefix on every host and after every restart.
- A client that arrived translated has the link-local ``fe80::<its IPv4>`` (RFC 7915 mapping
  done by the gateway), so its interface ID is ``0:0:<IPv4>``: it sits in the tenant's
  ``<prefix>::/96`` with its IPv4 in the low 32 bits (``192.168.0.10`` of tenant ``tenant1``
  -> ``fdd2:eb84:2a81:40a9::c0a8:a``).
- A native IPv6 client keeps its own interface ID inside the same /64.

Reversible: `TenantPrefixes` (built from the tenant names of the directory) maps an address
back to (tenant, link-local address, IPv4). 56 hashed bits make two tenants sharing a prefix
improbable (about N²/2^57 for N tenants); `TenantPrefixes.build` refuses it if it happens.
These addresses never leave the service host: they only appear in PROXY headers between the
front and the server, so RFC 4193's randomly chosen global ID is not needed for uniqueness.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from types import MappingProxyType

HASH_LABEL = b"cjb-tenant-prefix:"
PREFIX_LENGTH = 64
ULA_BYTE = 0xFD
_LINK_LOCAL = IPv6Network("fe80::/64")
_IID_MASK = (1 << 64) - 1


def tenant_prefix(tenant: str) -> IPv6Network:
    """The tenant's /64 (the same everywhere: derived from the name only)."""
    digest = hashlib.sha256(HASH_LABEL + tenant.encode()).digest()
    top = bytes([ULA_BYTE]) + digest[:7]
    return IPv6Network((int.from_bytes(top + bytes(8), "big"), PREFIX_LENGTH))


def ipv4_prefix(tenant: str) -> IPv6Network:
    """The tenant's /96 holding its translated (IPv4) clients."""
    return IPv6Network((int(tenant_prefix(tenant).network_address), 96))


def unique_address(tenant: str, link_local: IPv6Address | str) -> IPv6Address:
    """The tenant-unique address of a client with this link-local address (no zone)."""
    peer = ipaddress.ip_address(str(link_local).partition("%")[0])
    if not isinstance(peer, IPv6Address) or peer not in _LINK_LOCAL:
        raise ValueError(f"{link_local}: not an fe80::/64 link-local address")
    net = int(tenant_prefix(tenant).network_address)
    return IPv6Address(net | (int(peer) & _IID_MASK))


def client_address(tenant: str, ipv4: IPv4Address | str) -> IPv6Address:
    """The tenant-unique address of the LAN client `ipv4` of `tenant`."""
    return IPv6Address(int(ipv4_prefix(tenant).network_address) | int(IPv4Address(ipv4)))


@dataclass(frozen=True, slots=True)
class UniqueClient:
    """What a tenant-unique address stands for."""

    tenant: str
    link_local: IPv6Address  # the client's address on the tenant's link (no zone)

    @property
    def ipv4(self) -> IPv4Address | None:
        """The client's LAN IPv4 when it arrived translated (interface ID 0:0:<IPv4>)."""
        iid = int(self.link_local) & _IID_MASK
        return IPv4Address(iid & 0xFFFFFFFF) if iid >> 32 == 0 else None


@dataclass(frozen=True, slots=True)
class TenantPrefixes:
    """The reverse map: tenant-unique address -> `UniqueClient`, for a set of tenants."""

    _by_prefix: Mapping[int, str]

    @classmethod
    def build(cls, tenants: Iterable[str]) -> TenantPrefixes:
        by_prefix: dict[int, str] = {}
        for tenant in tenants:
            key = int(tenant_prefix(tenant).network_address) >> 64
            other = by_prefix.get(key)
            if other is not None and other != tenant:
                raise ValueError(f"tenants {other!r} and {tenant!r} hash to the same prefix")
            by_prefix[key] = tenant
        return cls(MappingProxyType(by_prefix))

    def lookup(self, address: IPv6Address | str) -> UniqueClient | None:
        """The client behind `address`, or None when it is no tenant-unique address here."""
        try:
            addr = ipaddress.ip_address(str(address).partition("%")[0])
        except ValueError:
            return None
        if not isinstance(addr, IPv6Address):
            return None
        tenant = self._by_prefix.get(int(addr) >> 64)
        if tenant is None:
            return None
        link_local = IPv6Address(int(_LINK_LOCAL.network_address) | (int(addr) & _IID_MASK))
        return UniqueClient(tenant, link_local)
