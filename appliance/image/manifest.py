"""The build manifest: what went in, what came out, in a form that repeats byte for byte.

No build times or host names: the same inputs must give the same manifest (sorted keys,
SOURCE_DATE_EPOCH is recorded as an input, timings go to the terminal only).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MANIFEST_VERSION = 1


def tree_digest(directory: Path) -> dict[str, str]:
    """sha256 of every file below `directory`, keyed by relative path."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def build_manifest(
    *,
    arch: str,
    suite: str,
    base_key: str,
    cjb: Mapping[str, Any],
    source_date_epoch: int,
    debian_packages: Mapping[str, str],
    python_packages: Mapping[str, str],
    inputs: Mapping[str, Any],
    outputs: Mapping[str, Mapping[str, Any]],
    disk: Mapping[str, Any],
) -> dict[str, Any]:
    return {
        "manifest_version": MANIFEST_VERSION,
        "arch": arch,
        "suite": suite,
        "base_key": base_key,
        "cjb": dict(cjb),
        "source_date_epoch": source_date_epoch,
        "debian_packages": dict(sorted(debian_packages.items())),
        "python_packages": dict(sorted(python_packages.items(), key=lambda kv: kv[0].lower())),
        "inputs": dict(inputs),
        "outputs": {name: dict(out) for name, out in sorted(outputs.items())},
        "disk": dict(disk),
    }


def render(manifest: Mapping[str, Any]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"
