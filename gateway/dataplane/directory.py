"""The tenant directory the service host reads: interface name -> tenant.

Format (read by cjb.service.directory, version 1):
  {"version": 1, "tenants": {"<service ifname>": {"tenant": "<name>",
   "service_ipv4": "192.168.0.100", "native_ifname": "<native ifname>"}}}
Written atomically (write + rename) so a reader never sees half a file.
"""

from __future__ import annotations

import json
from pathlib import Path

from cjb.common.private_file import atomic_write
from cjb.gateway.dataplane.config import GatewayConfig


def directory(cfg: GatewayConfig) -> dict[str, object]:
    tenants: dict[str, object] = {}
    for t in cfg.tenants:
        entry: dict[str, str] = {"tenant": t.name, "service_ipv4": str(t.service_ipv4)}
        if t.native_ipv6:
            entry["native_ifname"] = t.native_ifname
        tenants[t.service_ifname] = entry
    return {"version": 1, "tenants": tenants}


def write_json_atomic(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n", 0o644)


def write_directory(cfg: GatewayConfig) -> None:
    write_json_atomic(cfg.directory_file, directory(cfg))
