"""Readable tables for `cjb gateway device list|show` (plain text, fixed columns)."""

from __future__ import annotations

import time

from cjb.gateway.control.registry import AuditRow, CertRow, DeviceRow, TenantRow


def _when(t: float | None, now: float) -> str:
    if t is None:
        return "-"
    age = max(0, int(now - t))
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t))
    return f"{stamp} ({age}s ago)"


def _short_key(key: str | None) -> str:
    return f"{key[:10]}…" if key else "-"


def device_table(devices: list[DeviceRow], tenants: dict[str, TenantRow], now: float) -> str:
    head = f"{'serial':20} {'tenant':13} {'state':9} {'vni':>8}  {'overlay':24} last seen"
    lines = [head]
    for d in devices:
        t = tenants.get(d.tenant or "")
        vni = str(t.vni) if t and t.vni is not None and d.state == "enrolled" else "-"
        overlay = (
            str(t.overlay_address) if t and t.overlay_address and d.state == "enrolled" else "-"
        )
        seen = "-" if d.last_seen is None else f"{max(0, int(now - d.last_seen))}s ago"
        lines.append(
            f"{d.serial:20} {d.tenant or '-':13} {d.state:9} {vni:>8}  {overlay:24} {seen}"
        )
    if not devices:
        lines.append("(no devices: `cjb gateway device add` or `device import FILE`)")
    return "\n".join(lines) + "\n"


def device_detail(
    d: DeviceRow,
    t: TenantRow | None,
    certs: list[CertRow],
    audit: list[AuditRow],
    now: float,
) -> str:
    rows = [
        ("tenant", d.tenant or "- (unassigned)"),
        ("model", d.model),
        ("state", d.state),
        ("factory key", _short_key(d.factory_public_key)),
        ("WireGuard key", _short_key(d.wireguard_public_key)),
        ("enrolled", _when(d.enrolled_at, now)),
        ("last seen", _when(d.last_seen, now)),
        ("last address", d.last_peer or "-"),
    ]
    if t is not None:
        rows += [
            ("VNI", str(t.vni) if t.vni is not None else "- (allocated at enrollment)"),
            ("overlay address", str(t.overlay_address or "-")),
            ("service IPv4", str(t.service_ipv4 or "-")),
            ("LAN", f"{t.lan_prefix or '-'} via {t.lan_router or '-'}, MTU {t.lan_mtu}"),
            ("config version", str(t.config_version)),
        ]
    if d.heartbeat:
        hb = d.heartbeat
        rows.append(("tunnel up", str(hb.get("tunnel_up"))))
        for k, v in sorted((hb.get("counters") or {}).items()):
            rows.append((f"  {k}", str(v)))
    out = [f"device {d.serial}"] + [f"  {k:18} {v}" for k, v in rows]
    out.append("  certificates")
    for c in certs:
        state = "revoked" if c.revoked_at else ("expired" if c.not_after < now else "valid")
        until = time.strftime("%Y-%m-%d", time.gmtime(c.not_after))
        out.append(f"    {c.fingerprint[:16]}…  until {until}  {state}")
    out.append("  audit (newest first)")
    for a in audit:
        stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(a.at))
        out.append(f"    {stamp}  {a.event:15} {a.reason or '':22} {a.peer or ''}")
    return "\n".join(out) + "\n"
