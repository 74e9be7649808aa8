"""Render the running gateway's status file as a readable table per tenant."""

from __future__ import annotations

import json
import time
from pathlib import Path

STALE_AFTER = 5.0  # seconds without a rewrite: the gateway is not running


def read_status(path: Path) -> dict[str, object] | None:
    try:
        data: dict[str, object] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data


def _n(v: object) -> int:
    return int(v) if isinstance(v, int) else 0


def render(status: dict[str, object] | None, path: Path, now: float | None = None) -> str:
    if status is None:
        return f"no status at {path}: is `cjb gateway run` running with this config?\n"
    now = time.time() if now is None else now
    age = now - float(status.get("updated", 0))  # type: ignore[arg-type]
    running = not status.get("stopped") and age < STALE_AFTER
    lines = [
        f"gateway pid {status.get('pid')}: "
        + ("running" if running else f"NOT RUNNING (status {age:.0f}s old)"),
        f"unknown-VNI packets dropped: {status.get('unknown_vni_drops', 0)}",
        "",
    ]
    tenants = status.get("tenants") or {}
    assert isinstance(tenants, dict)
    for name, t in sorted(tenants.items()):
        state = t.get("state") if running else "stopped"
        lines.append(
            f"tenant {name}  vni {t.get('vni')}  appliance {t.get('appliance')}  [{state}]"
        )
        if t.get("error"):
            lines.append(f"  error: {t['error']}")
        ports = t.get("ports", {})
        counters = (t.get("router") or {}).get("ports", {})
        lines.append(
            f"  {'port':8} {'link':16} {'rx frames':>10} {'rx bytes':>12} "
            f"{'tx frames':>10} {'tx bytes':>12}"
        )
        for role, ifname in ports.items():
            c = counters.get(role, {})
            lines.append(
                f"  {role:8} {ifname:16} {_n(c.get('rx_frames')):>10} {_n(c.get('rx_bytes')):>12} "
                f"{_n(c.get('tx_frames')):>10} {_n(c.get('tx_bytes')):>12}"
            )
        binding = t.get("vni_binding", {})
        lines.append(
            f"  vxlan accepted {binding.get('vxlan_accepted', 0)}, "
            f"dropped as VNI spoofing {binding.get('vni_spoofed', 0)}"
        )
        drops = (t.get("router") or {}).get("drops", {})
        text = ", ".join(f"{k} {v}" for k, v in sorted(drops.items())) or "none"
        lines.append(f"  drops: {text}")
        if (t.get("router") or {}).get("last_error"):
            lines.append(f"  last error: {t['router']['last_error']}")
        lines.append("")
    return "\n".join(lines)
