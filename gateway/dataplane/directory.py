"""The tenant directory the service host reads: interface name -> tenant.

Built as common/tenant_directory.DirectoryFile, the model the service host's reader
validates with; written atomically (write + rename) so a reader never sees half a file.
"""

from __future__ import annotations

import json
from pathlib import Path

from cjb.common.private_file import atomic_write
from cjb.common.tenant_directory import SUPPORTED_VERSION, DirectoryEntry, DirectoryFile
from cjb.gateway.dataplane.config import GatewayConfig


def directory(cfg: GatewayConfig) -> DirectoryFile:
    return DirectoryFile(
        version=SUPPORTED_VERSION,
        tenants={
            t.service_ifname: DirectoryEntry(
                tenant=t.name,
                service_ipv4=t.service_ipv4,
                native_ifname=t.native_ifname if t.native_ipv6 else None,
            )
            for t in cfg.tenants
        },
    )


def write_json_atomic(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n", 0o644)


def write_directory(cfg: GatewayConfig) -> None:
    cfg.directory_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(cfg.directory_file, directory(cfg).to_json(), 0o644)
