"""The summary table's own mechanism (reskit.py): a row with a loss shows FAIL and fails its
test; a row is written before the test's later asserts, so a test that fails afterwards
still has its row, marked FAIL; the counts must add up. Each case runs in a pytest of its
own with reskit loaded as a plugin, as the suite's conftest loads it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from reskit import Tally, format_row, make_row, merge, table

HERE = Path(__file__).resolve().parent

INNER = """
def test_lost_one(report):
    report("lossy", 10, 9, 1, "one timed out", means="answered")

def test_row_then_failing_assert(report):
    report("clean-then-broken", 5, 5, 0, means="answered")
    assert 1 + 1 == 3, "a later check fails"

def test_counts_do_not_add_up(report):
    report("bad-sum", 5, 5, 1, means="answered")

def test_clean(report):
    report("clean", 3, 3, 0, means="answered")

def test_needs_a_definition(report):
    report("undefined", 3, 3, 0)
"""


def _run_inner(tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    (tmp_path / "test_inner.py").write_text(INNER)
    results = tmp_path / "rows.jsonl"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "CJB_RESILIENCE_RESULTS": str(results),
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "reskit", "-p", "no:cacheprovider", "-q",
         "--rootdir", str(tmp_path), str(tmp_path / "test_inner.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    records = [json.loads(line) for line in results.read_text().splitlines()]
    return done, records


def test_rows_are_written_and_failures_shown(tmp_path: Path) -> None:
    done, records = _run_inner(tmp_path)
    out = done.stdout
    assert done.returncode == 1, out
    rows = {r["name"]: r for r in merge(records)}
    # Every row that reached report() was written, whatever happened after.
    assert set(rows) == {"lossy", "clean-then-broken", "bad-sum", "clean"}, rows
    assert (rows["lossy"]["tried"], rows["lossy"]["survived"], rows["lossy"]["lost"]) == (10, 9, 1)
    verdicts = {name: row["failed"] or row["test_failed"] for name, row in rows.items()}
    assert verdicts == {"lossy": True, "clean-then-broken": True, "bad-sum": True, "clean": False}
    # The tests themselves: a loss fails its test, a later assert fails its test, and so do
    # counts that do not add up or a row without a definition of "survived".
    for test in ("lost_one", "row_then_failing_assert", "counts_do_not_add_up"):
        assert f"FAILED test_inner.py::test_{test}" in out, out
    assert "FAILED test_inner.py::test_needs_a_definition" in out, out
    assert "4 failed, 1 passed" in out, out
    # The table printed at the end of the run marks them.
    summary = out[out.index("resilience summary") :]
    lines = {ln.split()[0]: ln for ln in summary.splitlines() if ln.split()}
    assert lines["lossy"].split()[1:5] == ["10", "9", "1", "FAIL"], summary
    assert lines["clean-then-broken"].split()[1:5] == ["5", "5", "0", "FAIL"], summary
    assert lines["clean"].split()[1:5] == ["3", "3", "0", "ok"], summary
    assert "survived = answered" in summary
    assert "4 rows, 3 FAIL" in summary


def test_table_and_tally() -> None:
    tally = Tally()
    for status in (200, 429, 429, 500, None):
        tally.add(status in (200, 429), f"status {status}")
    assert tally.counts == (5, 3, 2)
    assert tally.lost_note() in ("1 status 500, 1 status None", "1 status None, 1 status 500")
    ok = make_row("a", 3, 3, 0, "", "answered", "t::a")
    bad = make_row("b", *tally.counts, tally.lost_note(), "answered 200 or 429", "t::b")
    assert format_row(ok).startswith("a: 3 tried, 3 survived, 0 lost [ok]")
    assert "[FAIL]" in format_row(bad)
    text = table([ok, bad])
    assert "survived = answered 200 or 429" in text
    assert text.splitlines()[-1] == "2 rows, 1 FAIL"
