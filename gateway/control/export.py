"""The data plane's read-only view of the registry: export/desired.json (statedir.py says why
an export). Written by the API (on every generation change) and by the inventory commands;
read by gateway/dataplane/desired.py. Only what the data plane needs: per enrolled device its
tenant, VNI, overlay address, WireGuard public key, service IPv4 and LAN MTU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cjb.common.private_file import atomic_write
from cjb.gateway.control.registry import Registry

EXPORT_VERSION = 1
EXPORT_MODE = 0o640  # owner (API) writes, the data plane's group reads


def export_doc(reg: Registry) -> dict[str, Any]:
    return {
        "version": EXPORT_VERSION,
        "generation": reg.generation(),
        "tunnels": [
            {
                "tenant": t.tenant,
                "serial": t.serial,
                "vni": t.vni,
                "overlay_address": str(t.overlay_address),
                "wireguard_public_key": t.wireguard_public_key,
                "service_ipv4": str(t.service_ipv4) if t.service_ipv4 else None,
                "lan_mtu": t.lan_mtu,
            }
            for t in reg.desired_tunnels()
        ],
    }


def write_export(reg: Registry, path: Path) -> int:
    doc = export_doc(reg)
    # Same owner and group as the directory (export/: API user, data plane's group), also when
    # an inventory command runs as root.
    st = os.stat(path.parent)
    owner = (st.st_uid, st.st_gid) if os.geteuid() == 0 else None
    atomic_write(path, json.dumps(doc, indent=1, sort_keys=True) + "\n", EXPORT_MODE, owner=owner)
    return int(doc["generation"])
