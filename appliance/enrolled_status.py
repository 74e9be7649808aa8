"""What the enrolled agent reports: the heartbeat's counters and facts for the gateway, and
status.json for `cjb appliance status` (rewritten every loop turn, atomically)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cjb.appliance.keys import DeviceKeys, FactoryIdentity
from cjb.appliance.lifecycle import Lifecycle
from cjb.appliance.reconcile import Reconciler
from cjb.common.control.protocol import (
    COUNTER_NAME,
    MAX_HEARTBEAT_COUNTERS,
    MAX_WIRE_INT,
    EnrollResponse,
    Heartbeat,
    LanFacts,
)
from cjb.common.private_file import atomic_write

STATUS_FILE = "status.json"


@dataclass(frozen=True, slots=True)
class AgentView:
    """The agent's state at one moment, as the reports need it."""

    identity: FactoryIdentity
    keys: DeviceKeys
    machine: Lifecycle
    parts: Reconciler
    enrollment: EnrollResponse | None
    lan: LanFacts | None
    uptime: float
    now: float


def counters(view: AgentView) -> dict[str, int]:
    parts = view.parts
    out = {f"filter_{name}": packets for name, (packets, _) in parts.filter_counters.items()}
    if parts.tunnel is not None:
        out.update(parts.tunnel.counters)
    if parts.wan_input is not None:
        out.update(parts.wan_input.counters())
    out.update(parts.discovery.counters())
    out.update(view.machine.counters.as_dict())
    # The gateway refuses a heartbeat outside the wire bounds: send what fits.
    fits = sorted(k for k in out if COUNTER_NAME.match(k))[:MAX_HEARTBEAT_COUNTERS]
    return {k: min(max(0, int(out[k])), MAX_WIRE_INT) for k in fits}


def heartbeat(view: AgentView) -> Heartbeat:
    config_version = view.enrollment.config.config_version if view.enrollment else 0
    tunnel = view.parts.tunnel
    age = tunnel.last_handshake_age if tunnel is not None else None
    return Heartbeat(
        serial=view.identity.serial,
        config_version=config_version,
        uptime_seconds=min(max(0, int(view.uptime)), MAX_WIRE_INT),
        tunnel_up=bool(tunnel and tunnel.up and tunnel.on_bridge),
        last_handshake_age_seconds=None if age is None else min(max(0, int(age)), MAX_WIRE_INT),
        counters=counters(view),
        lan=view.lan,
    )


def status(view: AgentView) -> dict[str, Any]:
    parts = view.parts
    tunnel = parts.tunnel
    config = view.enrollment.config if view.enrollment is not None else None
    cfg = parts.cfg
    return {
        "mode": "enrolled",
        "pid": os.getpid(),
        "updated": time.time(),
        "serial": view.identity.serial,
        "factory_key_fingerprint": view.identity.fingerprint,
        "wireguard_public_key": view.keys.wireguard_public_b64,
        "phase": view.machine.phase.value,
        "status_line": view.machine.status_line(view.now),
        "tenant": config.tenant if config else None,
        "config_version": config.config_version if config else None,
        "service_ipv4": str(config.service_ipv4) if config else None,
        "vni": config.tunnel.vni if config else None,
        "bridge": cfg.bridge,
        "tunnel": cfg.tunnel_port,
        "tunnel_up": bool(tunnel and tunnel.up),
        "tunnel_on_bridge": bool(tunnel and tunnel.on_bridge),
        "tunnel_detail": tunnel.detail if tunnel else "no tunnel (not enrolled)",
        "last_handshake_age": tunnel.last_handshake_age if tunnel else None,
        "lan": view.lan.model_dump(mode="json") if view.lan else None,
        "counters": counters(view),
        "discovery": parts.discovery.note,
        "vxlan_guard": _guard_note(parts),
        "errors": parts.errors,
    }


def _guard_note(parts: Reconciler) -> str:
    if parts.wan_input is None:
        return "off (wan_input: false)"
    if parts.wan_input.guard_error is not None:
        return f"INACTIVE: {parts.wan_input.guard_error}"
    return "active"


def write_status(state_dir: Path, doc: dict[str, Any]) -> None:
    path = state_dir / STATUS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    atomic_write(path, text, 0o644, durable=False)
