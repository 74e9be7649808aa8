"""Mutation testing of the wire and control cores against the fast tests that exercise them.

    .venv/bin/python tools/mutation.py                   # every mutant of the three packages
    .venv/bin/python tools/mutation.py --sample 250      # a fixed-seed sample per package
    .venv/bin/python tools/mutation.py --package packet  # one package (xlat, packet, control)
    .venv/bin/python tools/mutation.py --report          # the score of the last session
    .venv/bin/python tools/mutation.py --rerun-survivors # after adding tests that kill some

(`make mutation` runs the first form.) Each package gets a cosmic-ray session under .mutation/
(gitignored): an interrupted run resumes where it stopped, and `--report` prints killed /
survived per package plus each survivor (file:line, operator). Score = killed / (killed +
survived); a mutant that makes the tests time out or crash counts as killed.

cosmic-ray rather than mutmut: it edits the sources in place and runs any test command, so
the `cjb -> repo root` package mapping needs nothing special, while mutmut 3 imports its
mutated copies from a mutants/ folder that this mapping bypasses.

The mutants are applied to a copy of the tracked files in .mutation/cjb, never to the
checkout: the copy's parent goes first on PYTHONPATH, so `import cjb` finds the copy before
the editable install (whose finder comes after the path finder).

Operators: one natural replacement per site (+/-, <=/<, ==/!=, &/|, <</>>, is/is not, in/not
in), numbers +-1, `not` inserted, and/or swapped, True/False, loops run zero times,
exceptions and decorators replaced. cosmic-ray's all-to-all operator pairs (`+` -> `**`,
`<` -> `is`, ...) are left out: they multiply the count tenfold and the same tests kill them.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutation"
COPY = WORK / "cjb"  # named cjb: its parent on PYTHONPATH makes `import cjb` load the copy
FAST = "-m 'not root and not slow'"

# Per package: the sources mutated and the fast test files that exercise them.
PACKAGES: dict[str, tuple[str, list[str]]] = {
    "packet": (
        "common/packet",
        [
            "tests/test_packet_codecs.py",
            "tests/test_packet_transport.py",
            "tests/test_packet_edges.py",
            "tests/test_xlat_rfc7915.py",
            "tests/test_xlat_rfc_icmp.py",
            "tests/test_xlat_rfc_ndp.py",
            "tests/test_gso_translate.py",
            "tests/test_appliance_arp_probe.py",
        ],
    ),
    "control": (
        "gateway/control",
        [
            "tests/test_control_api.py",
            "tests/test_control_cli.py",
            "tests/test_control_crash.py",
            "tests/test_control_enroll.py",
            "tests/test_control_registry.py",
            "tests/test_control_edges.py",
            "tests/test_wireguard_registry.py",
        ],
    ),
    "xlat": (
        "gateway/xlat",
        [
            "tests/test_xlat_rfc7915.py",
            "tests/test_xlat_rfc_icmp.py",
            "tests/test_xlat_rfc_ndp.py",
            "tests/test_xlat_fast_path.py",
            "tests/test_xlat_malformed_corpus.py",
            "tests/test_xlat_properties.py",
            "tests/test_xlat_offline.py",
            "tests/test_alg_mdns.py",
            "tests/test_alg_ssdp.py",
            "tests/test_alg_translator.py",
            "tests/test_gso_malformed.py",
            "tests/test_gso_translate.py",
            "tests/test_userspace_unit.py",
        ],
    ),
}

# The one replacement kept per binary/comparison site; every other cosmic-ray pair is skipped.
KEPT_PAIRS = {
    "ReplaceBinaryOperator": {
        "Add_Sub", "Sub_Add", "Mul_FloorDiv", "Div_Mul", "FloorDiv_Mul", "Mod_FloorDiv",
        "Pow_Mul", "BitAnd_BitOr", "BitOr_BitAnd", "BitXor_BitOr", "LShift_RShift",
        "RShift_LShift",
    },
    "ReplaceComparisonOperator": {
        "Eq_NotEq", "NotEq_Eq", "Lt_LtE", "LtE_Lt", "Gt_GtE", "GtE_Gt", "Is_IsNot",
        "IsNot_Is", "In_NotIn", "NotIn_In",
    },
}  # fmt: skip


def _kept(operator: str) -> bool:
    name = operator.split("/")[-1]
    family, _, pair = name.partition("_")
    return pair in KEPT_PAIRS[family] if family in KEPT_PAIRS else True


def _copy_tree() -> None:
    """The tracked files (plus uncommitted edits) copied to .mutation/cjb, afresh."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    if COPY.exists():
        shutil.rmtree(COPY)
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            dst = COPY / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def _config(name: str, timeout: float = 120.0) -> Path:
    module, tests = PACKAGES[name]
    present = [t for t in tests if (COPY / t).exists()]
    command = f"{sys.executable} -m pytest -x -q -p no:cacheprovider {FAST} {' '.join(present)}"
    path = WORK / f"{name}.toml"
    path.write_text(
        "[cosmic-ray]\n"
        f'module-path = "{module}"\n'
        f"timeout = {timeout:.0f}.0\n"
        "excluded-modules = []\n"
        f'test-command = "{command}"\n'
        '[cosmic-ray.distributor]\nname = "local"\n'
    )
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(WORK), "PYTHONDONTWRITEBYTECODE": "1"}


def _init(name: str, sample: int | None, seed: int, timeout: float) -> Path:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    session = WORK / f"{name}.sqlite"
    config = _config(name, timeout)
    if session.exists():
        return session  # resume
    subprocess.run(
        [sys.executable, "-m", "cosmic_ray.cli", "init", str(config), str(session)],
        cwd=COPY, env=_env(), check=True,
    )  # fmt: skip
    with use_db(str(session), WorkDB.Mode.open) as db:
        items = list(db.pending_work_items)
        kept = [i for i in items if all(_kept(m.operator_name) for m in i.mutations)]
        if sample is not None and sample < len(kept):
            kept = random.Random(seed).sample(kept, sample)  # noqa: S311 - a sample, not a secret
        keep = {i.job_id for i in kept}
        skipped = [i.job_id for i in items if i.job_id not in keep]
        db.set_multiple_results(
            skipped, WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output="not selected")
        )
    print(f"{name}: {len(items)} mutants generated, {len(keep)} selected", flush=True)
    return session


def _baseline(name: str) -> float:
    """The tests must pass on the unmutated copy, or every mutant would count as killed.
    Returns the per-mutant timeout: a mutant that makes them hang counts as killed."""
    command = _config(name).read_text().split('test-command = "')[1].split('"\n')[0]
    start = time.monotonic()
    if subprocess.run(command, shell=True, cwd=COPY, env=_env(), check=False).returncode:  # noqa: S602
        sys.exit(f"{name}: the tests fail without any mutant; fix them first")
    return max(30.0, 4 * (time.monotonic() - start))  # 4x: the machine may be busy


def report(names: list[str]) -> None:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    for name in names:
        session = WORK / f"{name}.sqlite"
        if not session.exists():
            print(f"{name}: no session")
            continue
        with use_db(str(session), WorkDB.Mode.open) as db:
            done = [
                (i, r)
                for i, r in db.completed_work_items
                if r.worker_outcome != WorkerOutcome.SKIPPED
            ]
            pending = sum(1 for _ in db.pending_work_items)
        survivors = [(i, r) for i, r in done if r.test_outcome == TestOutcome.SURVIVED]
        killed = len(done) - len(survivors)
        score = 100.0 * killed / len(done) if done else 0.0
        print(
            f"{name} ({PACKAGES[name][0]}): {len(done)} run, {killed} killed, "
            f"{len(survivors)} survived -> {score:.1f}% killed; {pending} not run yet"
        )
        for item, _ in sorted(
            survivors,
            key=lambda x: (str(x[0].mutations[0].module_path), x[0].mutations[0].start_pos),
        ):
            m = item.mutations[0]
            op = re.sub(r"^core/", "", m.operator_name)
            print(f"  survived: {m.module_path}:{m.start_pos[0]} {op} #{m.occurrence}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--package", choices=sorted(PACKAGES), action="append")
    parser.add_argument("--sample", type=int, help="mutants per package, fixed-seed sample")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--report", action="store_true", help="print the score, run nothing")
    parser.add_argument("--fresh", action="store_true", help="forget earlier sessions")
    parser.add_argument(
        "--rerun-survivors", action="store_true", help="test the survivors again (new tests)"
    )
    args = parser.parse_args()
    names = args.package or ["packet", "control", "xlat"]
    if args.report:
        report(names)
        return 0
    WORK.mkdir(exist_ok=True)
    if args.fresh:
        for name in names:
            (WORK / f"{name}.sqlite").unlink(missing_ok=True)
    if args.rerun_survivors:
        for name in names:
            session = WORK / f"{name}.sqlite"
            if session.exists():
                with sqlite3.connect(session) as conn:
                    conn.execute("DELETE FROM work_results WHERE test_outcome = 'SURVIVED'")
    _copy_tree()
    for name in names:
        timeout = _baseline(name)
        session = _init(name, args.sample, args.seed, timeout)
        subprocess.run(
            [sys.executable, "-m", "cosmic_ray.cli", "exec", str(WORK / f"{name}.toml"),
             str(session)],
            cwd=COPY, env=_env(), check=True,
        )  # fmt: skip
        report([name])
    report(names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
