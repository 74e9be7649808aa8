"""The reliability and security suite, from one command, with the summary table.

    sudo .venv/bin/python bench/resilience.py            # the CI subset (a few minutes)
    sudo .venv/bin/python bench/resilience.py --long     # the issue's counts (CJB_LONG=1):
        20 kills of each kind, WAN cuts of 1 s / 30 s / 5 min, 100 tenants, 10 min of
        coverage-guided fuzzing, 1,000,000-nonce flood (about 35 minutes)
    ... bench/resilience.py -k isolation                 # extra arguments go to pytest

It runs tests/resilience/ under pytest (each test writes its rows as it counts them, see
tests/resilience/reskit.py), prints them as one table (a row that lost anything, or whose test
failed, shows FAIL), then pytest's verdict and the path of pytest's full log (kept, so a
failure can be read in full; --log chooses the path). Exit status is pytest's. Without root
the lab items skip with their reason.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "tests" / "resilience"


def _reskit() -> Any:
    spec = importlib.util.spec_from_file_location("resilience_reskit", SUITE / "reskit.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--long", action="store_true", help="the issue's full counts (CJB_LONG=1)")
    parser.add_argument("--log", type=Path, help="where to keep pytest's full output")
    args, pytest_args = parser.parse_known_args()
    if os.geteuid() != 0:
        print("note: not root, the lab items (isolation, kills, WAN faults, load) will skip")
    with tempfile.TemporaryDirectory(prefix="cjb-resilience-") as tmp:
        results = Path(tmp) / "results.jsonl"
        env = {**os.environ, "CJB_RESILIENCE_RESULTS": str(results)}
        if args.long:
            env["CJB_LONG"] = "1"
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", str(SUITE), "-q", "-rxXs", "-p", "no:cacheprovider",
             *pytest_args],
            cwd=ROOT, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        took = time.monotonic() - start
        records = (
            [json.loads(line) for line in results.read_text().splitlines()]
            if results.exists()
            else []
        )
    reskit = _reskit()
    rows = reskit.merge(records)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log = args.log or Path(tempfile.gettempdir()) / f"cjb-resilience-{stamp}.log"
    log.write_text(
        f"$ pytest {SUITE} {' '.join(pytest_args)}\n\n--- stdout\n{proc.stdout}"
        f"\n--- stderr\n{proc.stderr}"
    )
    verdict = [
        ln
        for ln in proc.stdout.splitlines()
        if ln.startswith(("FAILED", "ERROR", "XFAIL", "XPASS", "SKIPPED"))
    ]
    final = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-2000:]
    if proc.returncode != 0:
        print(proc.stdout[-6000:])
        print(proc.stderr[-2000:])
    mode = "long (CJB_LONG=1)" if args.long else "CI subset"
    print(f"\nCJB resilience suite, {mode}: {took:.0f}s\n")
    print(reskit.table(rows) if rows else "(no figures: nothing ran)")
    print()
    for line in verdict:
        print(line)
    print(final)
    print(f"pytest's full log: {log}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
