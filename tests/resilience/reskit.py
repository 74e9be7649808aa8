"""Helpers of the resilience suite (issue 8): the CI/long scale, the summary table, the
registry consistency check. Imported by the tests, conftest.py and bench/resilience.py."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any


def long_run() -> bool:
    return os.environ.get("CJB_LONG") == "1"


def scale(ci: int, long: int) -> int:
    """The CI figure, or the issue's figure with CJB_LONG=1."""
    return long if long_run() else ci


def format_row(row: dict[str, Any]) -> str:
    line = f"{row['name']}: {row['tried']} tried, {row['survived']} survived, {row['lost']} lost"
    return line + (f" ({row['note']})" if row.get("note") else "")


def table(rows: list[dict[str, Any]]) -> str:
    head = ("item", "tried", "survived", "lost", "figures")
    body = [
        (r["name"], str(r["tried"]), str(r["survived"]), str(r["lost"]), r.get("note", ""))
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(4)]
    lines = []
    for cells in [head, *body]:
        lines.append(
            "  ".join(c.ljust(w) for c, w in zip(cells[:4], widths, strict=True)) + "  " + cells[4]
        )
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


Report = Callable[..., None]


def check_registry(path: Path) -> None:
    """integrity_check, and no VNI / overlay address / WireGuard key given out twice."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        for table, column in (
            ("tenants", "vni"),
            ("tenants", "overlay_index"),
            ("tenants", "overlay_address"),
            ("devices", "wireguard_public_key"),
        ):
            dupes = conn.execute(
                f"SELECT {column}, COUNT(*) FROM {table} WHERE {column} IS NOT NULL "  # noqa: S608
                f"GROUP BY {column} HAVING COUNT(*) > 1"
            ).fetchall()
            assert dupes == [], f"{table}.{column} allocated twice: {dupes}"
        # Every enrolled device holds a WireGuard key and its tenant has a VNI.
        bad = conn.execute(
            "SELECT d.serial FROM devices d JOIN tenants t ON t.name = d.tenant "
            "WHERE d.state = 'enrolled' AND (d.wireguard_public_key IS NULL OR t.vni IS NULL)"
        ).fetchall()
        assert bad == [], f"enrolled without allocation: {bad}"
    finally:
        conn.close()
