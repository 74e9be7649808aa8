"""The config files the lab hands to the processes it starts (gateway, agents)."""

from __future__ import annotations

import json
from pathlib import Path

from cjb.lab.topology import (
    GATEWAY_UNDERLAY,
    LAN_MTU,
    SERVICE_IPV4,
    VXLAN_PORT,
    LabNames,
    tenant_name,
    underlay_addr,
)


def gateway_config(names: LabNames, tenants: int, run_dir: Path) -> dict[str, object]:
    return {
        "underlay": {"address": str(GATEWAY_UNDERLAY), "port": VXLAN_PORT, "device": "wan0"},
        "service_netns": names.ns("service"),
        "state_dir": str(run_dir / "gateway"),
        "directory_file": str(run_dir / "tenants.json"),
        "tenants": {
            tenant_name(k): {
                "vni": k,
                "appliance": str(underlay_addr(k, 2)),
                "service_ipv4": str(SERVICE_IPV4),
                "lan_mtu": LAN_MTU,
                "native_ipv6": True,
            }
            for k in range(1, tenants + 1)
        },
    }


def appliance_config(k: int, run_dir: Path) -> dict[str, object]:
    return {
        "bridge": "br-lan",
        "lan_ports": ["lan0"],
        "tunnel": {
            "name": "cjb-vx0",
            "vni": k,
            "local": str(underlay_addr(k, 2)),
            "remote": str(GATEWAY_UNDERLAY),
            "port": VXLAN_PORT,
            "underlay": "wan0",
            "mtu": LAN_MTU,
        },
        "state_dir": str(run_dir / f"appliance{k}"),
        "check_interval": 1.0,
    }


def write_configs(names: LabNames, tenants: int, run_dir: Path) -> dict[str, Path]:
    """Write every config file; returns node -> config path."""
    paths: dict[str, Path] = {}
    gw = run_dir / "gateway.json"
    gw.write_text(json.dumps(gateway_config(names, tenants, run_dir), indent=2) + "\n")
    paths["gateway"] = gw
    for k in range(1, tenants + 1):
        path = run_dir / f"appliance{k}.json"
        path.write_text(json.dumps(appliance_config(k, run_dir), indent=2) + "\n")
        paths[f"appliance{k}"] = path
    return paths
