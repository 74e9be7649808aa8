"""When is a lab run up, how long may that take, and what is still missing when it is not.

`lab up` waits on files the processes publish (the gateway's status.json, each agent's
status.json). Each check returns what is still missing, one line per node, so a timeout can
say which tenants and why instead of only "timed out": with 100 appliances, "appliance 37:
no handshake yet" is the whole diagnosis.
"""

from __future__ import annotations

import json
from pathlib import Path

# Enrollment (ARP probing, nonce, CSR, WireGuard handshake) and the gateway's reconcile of
# each new tenant. Measured on the 2-core development machine: 20 appliances are up ~15 s
# after their agents start, 100 within ~100 s; the per-tenant allowance leaves room for a
# machine shared with other labs.
ENROLL_BASE = 60.0
ENROLL_PER_TENANT = 2.0
SHOWN = 8  # missing nodes named in a message; the rest are counted


def enroll_timeout(tenants: int) -> float:
    """Seconds to wait for `tenants` appliances to enroll and their tunnels to come up."""
    return ENROLL_BASE + ENROLL_PER_TENANT * tenants


def _json_file(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _appliance_note(run_dir: Path, k: int) -> str:
    status = _json_file(run_dir / f"appliance{k}" / "status.json")
    if status is None:
        return "agent has written no status yet"
    errors = status.get("errors")
    if isinstance(errors, list) and errors:
        return f"error: {errors[0]}"
    return str(status.get("status_line") or status.get("tunnel_detail") or "no detail")


def gateway_missing(run_dir: Path, tenants: int) -> list[str]:
    """Tenants the gateway does not run yet (empty: all `tenants` run, directory written)."""
    status = _json_file(run_dir / "gateway" / "status.json")
    if status is None:
        return ["gateway: no status.json yet (is `cjb gateway run` starting?)"]
    items = status.get("tenants")
    items = items if isinstance(items, dict) else {}
    missing = []
    for k in range(1, tenants + 1):
        entry = items.get(f"tenant{k}")
        if not isinstance(entry, dict):
            missing.append(f"tenant{k}: not in the gateway yet; appliance{k}: "
                           f"{_appliance_note(run_dir, k)}")  # fmt: skip
        elif entry.get("state") != "running":
            missing.append(f"tenant{k}: {entry.get('state')}: {entry.get('error')}")
    if not missing and not (run_dir / "tenants.json").exists():
        missing.append("gateway: tenant directory tenants.json not written yet")
    return missing


def appliances_missing(run_dir: Path, tenants: int) -> list[str]:
    """Appliances whose tunnel is not up and on the LAN bridge yet."""
    missing = []
    for k in range(1, tenants + 1):
        status = _json_file(run_dir / f"appliance{k}" / "status.json")
        if status is None:
            missing.append(f"appliance{k}: agent has written no status yet")
        elif not (status.get("tunnel_up") and status.get("tunnel_on_bridge")):
            detail = status.get("tunnel_detail") or _appliance_note(run_dir, k)
            missing.append(
                f"appliance{k}: tunnel up={bool(status.get('tunnel_up'))} "
                f"on bridge={bool(status.get('tunnel_on_bridge'))}: {detail}"
            )
    return missing


def describe(missing: list[str]) -> str:
    """The first few missing nodes, one per line, and how many more."""
    lines = [f"  {m}" for m in missing[:SHOWN]]
    if len(missing) > SHOWN:
        lines.append(f"  ... and {len(missing) - SHOWN} more")
    return "\n".join(lines)
