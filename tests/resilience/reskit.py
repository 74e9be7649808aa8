"""Helpers of the resilience suite: the CI/long scale, the summary table and its `report`
fixture, the registry consistency check. Imported by the tests, conftest.py and
bench/resilience.py.

A row of the table, from a test, as soon as the attempts are counted and BEFORE any assert:

    report(
        "nonce-flood-https", tried=n, survived=ok, lost=n - ok,
        means="answered as intended (200 nonce or 429); lost = 5xx, other status, no answer",
        note=f"{issued} issued, {limited} x 429",
    )

- `tried`, `survived`, `lost` are counts of what was observed (attempt by attempt), never
  constants; tried must equal survived + lost. `Tally` counts them: `tally.add(ok, label)`
  per attempt, then `report(name, *tally.counts, means=..., note=...)`.
- `means` says in one line what "survived" counts (lost is every other tried attempt).
- The row is written at once: printed, appended to $CJB_RESILIENCE_RESULTS (JSON lines, read
  by bench/resilience.py) and kept for the table at the end of the pytest run; so it shows
  even when a later assert of the test fails.
- Its verdict is FAIL when lost > 0, when the counts do not add up, or when its test failed
  for any other reason (joined in at the end); report() itself then fails the test on the
  first two, after writing the row.
- The older positional form `report(name, tried, survived, lost, note)` still works once
  `means=` is added (it is keyword-only and required).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest


def long_run() -> bool:
    return os.environ.get("CJB_LONG") == "1"


def scale(ci: int, long: int) -> int:
    """The CI figure, or the issue's figure with CJB_LONG=1."""
    return long if long_run() else ci


class Tally:
    """Each attempt's outcome, counted: survived or lost, the lost ones by label."""

    def __init__(self) -> None:
        self.survived = 0
        self.lost_by: Counter[str] = Counter()

    def add(self, ok: bool, label: str = "lost") -> bool:
        if ok:
            self.survived += 1
        else:
            self.lost_by[label] += 1
        return ok

    @property
    def lost(self) -> int:
        return sum(self.lost_by.values())

    @property
    def tried(self) -> int:
        return self.survived + self.lost

    @property
    def counts(self) -> tuple[int, int, int]:
        return self.tried, self.survived, self.lost

    def lost_note(self) -> str:
        return ", ".join(f"{n} {what}" for what, n in self.lost_by.most_common())


def make_row(
    name: str, tried: int, survived: int, lost: int, note: str, means: str, test: str
) -> dict[str, Any]:
    return {
        "name": name,
        "tried": tried,
        "survived": survived,
        "lost": lost,
        "note": note,
        "means": means,
        "test": test,
        "failed": lost > 0 or tried != survived + lost,
    }


def verdict(row: dict[str, Any]) -> str:
    return "FAIL" if row.get("failed") or row.get("test_failed") else "ok"


def format_row(row: dict[str, Any]) -> str:
    line = f"{row['name']}: {row['tried']} tried, {row['survived']} survived, {row['lost']} lost"
    line += f" [{verdict(row)}]"
    return line + (f" ({row['note']})" if row.get("note") else "")


def table(rows: list[dict[str, Any]]) -> str:
    """One line per row, its definition of "survived" indented below it."""
    head = ("item", "tried", "survived", "lost", "verdict", "figures")
    body = [
        (r["name"], str(r["tried"]), str(r["survived"]), str(r["lost"]), verdict(r),
         r.get("note", ""))
        for r in rows
    ]  # fmt: skip
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(5)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells[:5], widths, strict=True)) + (
            "  " + cells[5]
        )

    lines = [line(head)]
    lines.append("-" * len(lines[0]))
    for row, cells in zip(rows, body, strict=True):
        lines.append(line(cells))
        lines.append(f"    survived = {row.get('means') or '(not defined)'}")
    failed = sum(verdict(r) == "FAIL" for r in rows)
    lines.append(f"{len(rows)} rows, {failed} FAIL")
    return "\n".join(lines)


def merge(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The JSON lines of $CJB_RESILIENCE_RESULTS (rows, then failed-test notes) as rows."""
    records = list(records)
    failed = {r["failed_test"] for r in records if "failed_test" in r}
    rows = [dict(r) for r in records if "name" in r]
    for row in rows:
        row["test_failed"] = row.get("test") in failed
    return rows


# -- the pytest side: the `report` fixture and the summary ------------------------------------

Report = Callable[..., None]
_ROWS: list[dict[str, Any]] = []
_FAILED_TESTS: set[str] = set()


def _append(record: dict[str, Any]) -> None:
    out = os.environ.get("CJB_RESILIENCE_RESULTS")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(record) + "\n")


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Report:
    test = request.node.nodeid

    def record(
        name: str, tried: int, survived: int, lost: int, note: str = "", *, means: str
    ) -> None:
        assert means.strip(), f"{name}: say what 'survived' means for this row"
        row = make_row(name, tried, survived, lost, note, means, test)
        _ROWS.append(row)
        print(format_row(row))
        _append(row)
        assert tried == survived + lost, f"{name}: {tried} tried != {survived} + {lost}"
        assert lost == 0, f"{name}: {lost} of {tried} lost ({note}); survived = {means}"

    return record


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and item.nodeid not in _FAILED_TESTS:
        _FAILED_TESTS.add(item.nodeid)
        _append({"failed_test": item.nodeid})


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _ROWS:
        for row in _ROWS:
            row["test_failed"] = row["test"] in _FAILED_TESTS
        terminalreporter.section("resilience summary")
        terminalreporter.write_line(table(_ROWS))


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
