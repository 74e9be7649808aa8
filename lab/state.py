"""The record of a lab run, under /run/cjb-lab/<run id>/state.json.

It is what `exec`, `status` and `down` read. `down` does not depend on it: namespaces are
found by name pattern and processes by the namespace they live in, so a crashed `up` that
never wrote its state is cleaned up too.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cjb.common.private_file import atomic_write

LAB_ROOT = Path(os.environ.get("CJB_LAB_ROOT", "/run/cjb-lab"))


@dataclass
class ProcessRecord:
    node: str
    pid: int
    argv: list[str]
    log: str


@dataclass
class LabState:
    run_id: str
    tenants: int
    same_mac: bool
    namespaces: dict[str, str]  # node -> namespace
    processes: list[ProcessRecord] = field(default_factory=list)
    complete: bool = False  # set once `up` finished
    transport: str = "vxlan"  # "wireguard": enrolled appliances, VXLAN inside WireGuard

    @property
    def run_dir(self) -> Path:
        return LAB_ROOT / self.run_id

    def save(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(asdict(self), indent=2) + "\n"
        atomic_write(self.run_dir / "state.json", text, 0o644, durable=False)

    @classmethod
    def load(cls, run_dir: Path) -> LabState:
        raw = json.loads((run_dir / "state.json").read_text())
        raw["processes"] = [ProcessRecord(**p) for p in raw.get("processes", [])]
        return cls(**raw)


def runs() -> list[LabState]:
    found = []
    if LAB_ROOT.is_dir():
        for run_dir in sorted(LAB_ROOT.iterdir()):
            try:
                found.append(LabState.load(run_dir))
            except (FileNotFoundError, json.JSONDecodeError, TypeError):
                continue
    return found


def current() -> LabState | None:
    """The newest complete run, if any."""
    complete = [s for s in runs() if s.complete]
    return complete[-1] if complete else None
