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


def _guard_lines(status: dict[str, object]) -> list[str]:
    host = status.get("host_input")
    guard = status.get("vxlan_guard")
    lines = []
    if isinstance(host, dict):
        lines.append(
            f"host input dropped: {_n(host.get('input_dropped'))}, "
            f"VXLAN from outside the tunnel: {_n(host.get('vxlan_outside_tunnel'))}"
        )
    if isinstance(guard, dict):
        if guard.get("active"):
            d = guard.get("drops") or {}
            assert isinstance(d, dict)
            lines.append(
                f"VXLAN guard (tc): bound {_n(d.get('bound'))}, dropped: from underlay "
                f"{_n(d.get('from_underlay'))}, spoofed {_n(d.get('spoofed'))}, unknown VNI "
                f"{_n(d.get('unknown_vni'))}, fragments {_n(d.get('fragment'))}"
            )
        else:
            lines.append(f"VXLAN guard (tc): INACTIVE ({guard.get('error')})")
    return lines


def _fast_path_summary(fast: object) -> list[str]:
    """The gateway-wide line: who translates the common case, and why not the kernel."""
    if not isinstance(fast, dict):
        return []
    if fast.get("reason") and fast.get("mode") != "kernel":
        return [f"fast path: {fast.get('mode')} (reason: {fast['reason']})"]
    line = f"fast path: {fast.get('mode')}"
    return [line + (f" ({fast['reason']})" if fast.get("reason") else "")]


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
        *_guard_lines(status),
        *_fast_path_summary(status.get("fast_path")),
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
        lines.extend(_wireguard_lines(t.get("wireguard")))
        binding = t.get("vni_binding", {})
        lines.append(
            f"  vxlan accepted {binding.get('vxlan_accepted', 0)}, "
            f"dropped as VNI spoofing {binding.get('vni_spoofed', 0)}, "
            f"broadcast/multicast over the limit {binding.get('group_limited', 0)}"
        )
        drops = (t.get("router") or {}).get("drops", {})
        text = ", ".join(f"{k} {v}" for k, v in sorted(drops.items())) or "none"
        lines.append(f"  drops: {text}")
        lines.extend(_fast_path_lines(t.get("fast_path")))
        lines.extend(_userspace_io_lines(t.get("userspace_io"), t.get("gso")))
        if (t.get("router") or {}).get("last_error"):
            lines.append(f"  last error: {t['router']['last_error']}")
        lines.append("")
    return "\n".join(lines)


def _userspace_io_lines(mode: object, gso: object) -> list[str]:
    """The worker's IO mode; with vnet headers, how much travelled as super-frames."""
    if mode is None:
        return []
    if not isinstance(gso, dict):
        return [f"  userspace io: {mode}"]
    parts = []
    for d in ("to-service", "to-lan"):
        frames = _n((gso.get("superframes") or {}).get(d))
        segments = _n((gso.get("segments") or {}).get(d))
        parts.append(f"{d} {frames} super-frames ({segments} segments)")
    return [f"  userspace io: {mode}, " + ", ".join(parts)]


def _fast_path_lines(fast: object) -> list[str]:
    """The kernel fast path's per-tenant BPF counters, when the tenant uses it."""
    if not isinstance(fast, dict) or fast.get("mode") != "kernel":
        return []
    lines = []
    if fast.get("error"):
        lines.append(f"  fast path: {fast['error']}")
    c = fast.get("counters") or {}
    if isinstance(c, dict) and "to_service_frames" in c:
        lines.append(
            f"  kernel fast path: to service {_n(c.get('to_service_frames'))} frames "
            f"{_n(c.get('to_service_bytes'))} bytes, to LAN {_n(c.get('to_lan_frames'))} "
            f"frames {_n(c.get('to_lan_bytes'))} bytes, native "
            f"{_n(c.get('to_native_frames'))}/{_n(c.get('from_native_frames'))} frames, "
            f"to slow path {_n(c.get('slow_path_tunnel')) + _n(c.get('slow_path_service'))}, "
            f"errors {_n(c.get('errors'))}"
        )
    return lines


def _wireguard_lines(wg: object) -> list[str]:
    """The tenant appliance's WireGuard peer, when the transport is WireGuard."""
    if not isinstance(wg, dict):
        return []
    if not wg.get("configured"):
        return [f"  wireguard peer {wg.get('peer')} NOT CONFIGURED"]
    age = wg.get("handshake_age_seconds")
    handshake = "never" if age is None else f"{age:.0f}s ago"
    return [
        f"  wireguard peer {wg.get('peer')} {'up' if wg.get('up') else 'DOWN'}, "
        f"endpoint {wg.get('endpoint') or '-'}, handshake {handshake}, "
        f"rx {_n(wg.get('rx_bytes'))} B, tx {_n(wg.get('tx_bytes'))} B"
    ]
