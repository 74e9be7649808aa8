"""Fuzzing smoke: tools/fuzz_xlat.py's property under hypothesis in-process, and a short
coverage-guided atheris run as a subprocess (atheris is the `fuzz` extra, which CI installs;
without it that test skips and says so). The long runs are the documented command in
tools/fuzz_xlat.py; anything a run finds is added to FINDINGS below as a regression test."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reskit import Report, Tally, scale

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "fuzz_xlat.py"


def _tool():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("fuzz_xlat", TOOL)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod._imports()
    return mod


fuzz = _tool()

# Inputs (mode byte + frame) that a fuzz run flagged, or that sit on a parser's edge; each
# must keep passing check_one. No finding so far (atheris: ~900k runs/min, none).
FINDINGS: list[bytes] = [
    b"\x00",
    b"\x01",
    b"\x02" + b"\xff" * 14,
    b"\x03" + b"\x00" * 12 + b"\x86\xdd" + b"\x60" + b"\x00" * 39,
    b"\x00" + b"\x00" * 12 + b"\x08\x00" + b"\x4f" + b"\x00" * 59,
    b"\x00" + b"\x00" * 12 + b"\x08\x06" + b"\x00\x01\x08\x00\x06\x04\x00\x01" + b"\x00" * 20,
]


@pytest.mark.parametrize("data", FINDINGS, ids=lambda d: d[:8].hex())
def test_regression_inputs(data: bytes) -> None:
    fuzz.check_one(data)


def test_fuzz_property_hypothesis(report: Report) -> None:
    n = scale(1500, 100_000)
    frames = Tally()

    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.binary(min_size=1, max_size=1600))
    def prop(data: bytes) -> None:
        try:
            fuzz.check_one(data)
        except BaseException:
            frames.add(False, "broke the property")
            raise
        frames.add(True)

    try:
        prop()
    finally:  # the row is written whether the property held or not
        report(
            "fuzz-hypothesis", *frames.counts,
            f"random frames, both directions, both paths {frames.lost_note()}".rstrip(),
            means="frames (shrinking included) that kept check_one's property: counted drop "
            "or valid translation, no exception",
        )  # fmt: skip


def test_fuzz_coverage_guided_atheris(tmp_path: Path, report: Report) -> None:
    if os.environ.get("CI"):  # CI installs the fuzz extra: a skip there would hide lost coverage
        importlib.import_module("atheris")
    else:
        pytest.importorskip("atheris", reason="pip install -e '.[fuzz]' (coverage-guided fuzzing)")
    seconds = scale(15, 600)
    corpus = tmp_path / "corpus"
    seeded = subprocess.run(
        [sys.executable, str(TOOL), "--seeds", str(corpus)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert seeded.returncode == 0, seeded.stderr
    run = subprocess.run(
        [sys.executable, str(TOOL), str(corpus), f"-max_total_time={seconds}",
         "-print_final_stats=1"],
        capture_output=True, text=True, timeout=seconds + 120, check=False, cwd=tmp_path,
    )  # fmt: skip
    crashes = list(tmp_path.glob("crash-*"))
    done = re.search(r"Done (\d+) runs", run.stderr)
    progress = re.findall(r"^#(\d+)\s", run.stderr, re.MULTILINE)  # the last status line
    runs = int(done.group(1)) if done else int(progress[-1]) if progress else 0
    cov = re.search(r"cov: (\d+)", run.stderr)
    # libFuzzer stops at the first crash: a crashed run lost one input (or the run itself).
    lost = len(crashes) or (1 if run.returncode else 0)
    report(
        "fuzz-atheris", max(runs, lost), max(runs, lost) - lost, lost,
        f"{seconds}s coverage-guided, {cov.group(1) if cov else '?'} edges, "
        f"exit {run.returncode}",
        means="inputs run without a crash (libFuzzer stops at the first crash)",
    )  # fmt: skip
    assert run.returncode == 0 and not crashes, (
        f"BUG found by the fuzzer: {[c.read_bytes()[:64] for c in crashes]}\n{run.stderr[-3000:]}"
    )
    assert runs > 0, run.stderr[-2000:]
