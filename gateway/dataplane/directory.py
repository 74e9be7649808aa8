"""The tenant directory the service host reads: interface name -> tenant.

Format (read by cjb.service.directory, version 1):
  {"version": 1, "tenants": {"<service ifname>": {"tenant": "<name>",
   "service_ipv4": "192.168.0.100", "native_ifname": "<native ifname>"}}}
Written atomically (write + rename) so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_directory(cfg: GatewayConfig) -> None:
    write_json_atomic(cfg.directory_file, directory(cfg))
