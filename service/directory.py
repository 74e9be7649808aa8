"""The tenant directory: which service-host interface belongs to which tenant.

The gateway publishes it as a JSON file (written atomically: temp file + rename; its schema
is common/tenant_directory.py, shared with the writer)::

    {"version": 1,
     "tenants": {"t1": {"tenant": "acme", "service_ipv4": "192.168.0.100",
                        "native_ifname": "t1n"}}}

Keys of ``tenants`` are interface names on the service host (the tenant's translated service
link); ``native_ifname`` optionally names the tenant's untranslated native IPv6 link.
pydantic validates the file here, at the edge; the rest of the library sees frozen plain values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from types import MappingProxyType
from typing import Literal

from pydantic import ValidationError

from cjb.common.tenant_directory import (
    SUPPORTED_VERSION,
    DirectoryEntry,
    DirectoryFile,
)
from cjb.common.validation import validation_problems
from cjb.service.errors import DirectoryError
from cjb.service.tenant_address import TenantPrefixes

MAX_FILE_BYTES = 4 * 1024 * 1024

LinkKind = Literal["service", "native"]


@dataclass(frozen=True, slots=True)
class TenantEntry:
    ifname: str
    tenant: str
    service_ipv4: IPv4Address
    native_ifname: str | None


@dataclass(frozen=True, slots=True)
class Binding:
    """What one interface name means: the tenant's entry and which of its links it is."""

    entry: TenantEntry
    link: LinkKind


@dataclass(frozen=True, slots=True)
class TenantDirectory:
    version: int
    entries: tuple[TenantEntry, ...]
    _by_ifname: Mapping[str, Binding] = field(repr=False, compare=False)
    _by_tenant: Mapping[str, TenantEntry] = field(repr=False, compare=False)

    @classmethod
    def build(
        cls, entries: tuple[TenantEntry, ...], version: int = SUPPORTED_VERSION
    ) -> TenantDirectory:
        by_ifname: dict[str, Binding] = {}
        by_tenant: dict[str, TenantEntry] = {}
        for entry in entries:
            if entry.tenant in by_tenant:
                raise ValueError(f"tenant {entry.tenant!r} is listed twice")
            by_tenant[entry.tenant] = entry
            links: list[tuple[str, LinkKind]] = [(entry.ifname, "service")]
            if entry.native_ifname is not None:
                links.append((entry.native_ifname, "native"))
            for name, link in links:
                if name in by_ifname:
                    raise ValueError(f"interface {name!r} is bound to two links")
                by_ifname[name] = Binding(entry, link)
        TenantPrefixes.build(by_tenant)  # refuses two tenants with one tenant-unique prefix
        return cls(version, entries, MappingProxyType(by_ifname), MappingProxyType(by_tenant))

    def binding(self, ifname: str) -> Binding | None:
        return self._by_ifname.get(ifname)

    def by_tenant(self, tenant: str) -> TenantEntry | None:
        return self._by_tenant.get(tenant)


EMPTY = TenantDirectory.build(())


def parse_directory(data: bytes, source: str) -> TenantDirectory:
    """Parse the file's bytes; `source` (the file name) prefixes every error message."""
    if len(data) > MAX_FILE_BYTES:
        raise DirectoryError(f"{source}: file is larger than {MAX_FILE_BYTES} bytes")
    try:
        raw = json.loads(data)
    except UnicodeDecodeError as exc:
        raise DirectoryError(f"{source}: not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise DirectoryError(
            f"{source}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if isinstance(raw, dict) and raw.get("version") not in (None, SUPPORTED_VERSION):
        raise DirectoryError(
            f"{source}: version: unsupported directory version {raw.get('version')!r}"
            f" (this library reads version {SUPPORTED_VERSION})"
        )
    try:
        model = DirectoryFile.model_validate(raw)
    except ValidationError as exc:
        raise DirectoryError(f"{source}: {'; '.join(validation_problems(exc))}") from None
    entries = tuple(
        TenantEntry(
            ifname=ifname,
            tenant=m.tenant,
            service_ipv4=m.service_ipv4,
            native_ifname=m.native_ifname,
        )
        for ifname, m in sorted(model.tenants.items())
    )
    try:
        return TenantDirectory.build(entries, model.version)
    except ValueError as exc:
        raise DirectoryError(f"{source}: tenants: {exc}") from None


def dump_directory(directory: TenantDirectory) -> bytes:
    """The file form of a directory (what the gateway writes; used by tests and tools)."""
    doc = DirectoryFile(
        version=SUPPORTED_VERSION,
        tenants={
            e.ifname: DirectoryEntry(
                tenant=e.tenant, service_ipv4=e.service_ipv4, native_ifname=e.native_ifname
            )
            for e in directory.entries
        },
    )
    return doc.to_json().encode()
