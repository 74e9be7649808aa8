"""The tenant directory file's schema: which service-host interface belongs to which tenant.

The gateway's data plane writes it (gateway/dataplane/directory.py) and the service host's
library reads it (service/directory.py); both go through these models, so the writer can
never produce a file the reader refuses::

    {"version": 1,
     "tenants": {"t1": {"tenant": "acme", "service_ipv4": "192.168.0.100",
                        "native_ifname": "t1n"}}}
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints

SUPPORTED_VERSION: Literal[1] = 1

# Linux IFNAMSIZ is 16 including the NUL; '/' ':' and whitespace are refused by the kernel.
IFNAME_PATTERN = r"^[A-Za-z0-9_.\-@+]{1,15}$"
# Tenant names become directory names (docroot/<tenant>/) and log fields: keep them boring.
TENANT_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$"

IfName = Annotated[str, StringConstraints(pattern=IFNAME_PATTERN)]
TenantName = Annotated[str, StringConstraints(pattern=TENANT_PATTERN)]


class DirectoryEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: TenantName
    service_ipv4: IPv4Address
    native_ifname: IfName | None = None


class DirectoryFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1]
    tenants: dict[IfName, DirectoryEntry]

    def to_json(self) -> str:
        """The file's text: absent native links left out."""
        return self.model_dump_json(indent=2, exclude_none=True) + "\n"
