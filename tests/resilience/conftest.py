"""The resilience suite's driver: figures per item, one summary table.

Every test reports its figures with the `report` fixture (tests/resilience/reskit.py says
how: counts observed, a definition of "survived", written before any assert); each row is
printed, appended to $CJB_RESILIENCE_RESULTS (JSON lines, for bench/resilience.py) and
gathered into the table printed at the end of the pytest run, with a FAIL verdict for a row
that lost anything or whose test failed. Long variants run only with CJB_LONG=1
(`long_run()`), so `make test` stays unchanged.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The shared lab/control helpers (labkit, controlkit, xlat_frames) live one level up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# The fixture and the two hooks live in reskit, so a test of the mechanism can load them as
# a plugin (`-p reskit`) in a pytest run of its own.
from reskit import pytest_runtest_makereport, pytest_terminal_summary, report

__all__ = ["pytest_runtest_makereport", "pytest_terminal_summary", "report"]
