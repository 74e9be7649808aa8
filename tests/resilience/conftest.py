"""The resilience suite's driver (issue 8): figures per item, one summary table.

Every test reports its figures with the `report` fixture; each line is printed as
"name: N tried, N survived, N lost (note)", appended to $CJB_RESILIENCE_RESULTS (JSON lines,
for bench/resilience.py) and gathered into the table printed at the end of the pytest run.
Long variants run only with CJB_LONG=1 (`long_run()`), so `make test` stays unchanged.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

# The shared lab/control helpers (labkit, controlkit, xlat_frames) live one level up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reskit import Report, format_row, table

_ROWS: list[dict[str, Any]] = []


@pytest.fixture
def report() -> Report:
    def record(name: str, tried: int, survived: int, lost: int, note: str = "") -> None:
        row = {"name": name, "tried": tried, "survived": survived, "lost": lost, "note": note}
        _ROWS.append(row)
        print(format_row(row))
        out = os.environ.get("CJB_RESILIENCE_RESULTS")
        if out:
            with open(out, "a") as f:
                f.write(json.dumps(row) + "\n")

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _ROWS:
        terminalreporter.section("resilience summary (issue 8)")
        terminalreporter.write_line(table(_ROWS))
