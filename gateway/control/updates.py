"""Image updates from the gateway: which version each device should run, and how far a
roll-out has got (docs/decisions/0009-updates.md).

Sans-IO core (`Rollout.selects`, `progress`) plus a small SQLite store next to the registry
(`updates.sqlite3` in the state directory's api/), kept apart from the registry's schema: releases
(signed bundles the operator added), the roll-out (one at a time: the newest replaces the
last) and what each device reported.

Selection is stable: a device is in a P% roll-out when a hash of (version, serial) falls in the
first P of 100 buckets, so raising the percentage only adds devices, and each version picks
its own first devices (the same unlucky 5% are not always first).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cjb.common.control import image_version

VERSION_RE = image_version.VERSION_RE
# What a device reports, in order; "rolled-back": it came back on the old slot by itself.
STATES = ("offered", "downloading", "installed", "good", "failed", "rolled-back")
DONE = ("good",)
FAILED = ("failed", "rolled-back")


class UpdateError(ValueError):
    """A bad release, roll-out or report; the message says which field and why."""


def check_version(version: str) -> str:
    try:
        return image_version.check_version(version)
    except image_version.VersionError as exc:
        raise UpdateError(str(exc)) from None


def bucket(version: str, serial: str) -> int:
    """0..99, stable for a (version, serial) pair."""
    digest = hashlib.sha256(f"{version}\0{serial}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


@dataclass(frozen=True)
class Rollout:
    version: str
    percent: int = 0  # 0..100 of all enrolled devices
    tenants: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()  # serials
    created_at: float = 0.0

    def __post_init__(self) -> None:
        check_version(self.version)
        if not 0 <= self.percent <= 100:
            raise UpdateError(f"percent {self.percent}: must be 0..100")
        if not (self.percent or self.tenants or self.devices):
            raise UpdateError("a roll-out selects nobody: give --percent, --tenant or --device")

    def selects(self, serial: str, tenant: str | None) -> bool:
        return (
            serial in self.devices
            or (tenant is not None and tenant in self.tenants)
            or bucket(self.version, serial) < self.percent
        )


@dataclass(frozen=True)
class Release:
    version: str
    bundle: Path
    sha256: str
    size: int
    added_at: float


@dataclass(frozen=True)
class Report:
    serial: str
    version: str  # the version the report is about (the one offered)
    state: str
    running: str | None  # the version the device runs now
    detail: str
    at: float


@dataclass
class Progress:
    version: str
    selected: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    pending: int = 0  # selected, nothing reported yet

    @property
    def good(self) -> int:
        return self.by_state.get("good", 0)

    @property
    def failed(self) -> int:
        return sum(self.by_state.get(s, 0) for s in FAILED)

    def line(self) -> str:
        states = ", ".join(f"{s} {n}" for s, n in sorted(self.by_state.items()))
        return (
            f"{self.version}: {self.good}/{self.selected} good, {self.failed} failed, "
            f"{self.pending} pending" + (f" ({states})" if states else "")
        )


def progress(
    rollout: Rollout, devices: Iterable[tuple[str, str | None]], reports: dict[str, Report]
) -> Progress:
    """Counts over the enrolled devices (serial, tenant) the roll-out selects."""
    p = Progress(rollout.version)
    for serial, tenant in devices:
        if not rollout.selects(serial, tenant):
            continue
        p.selected += 1
        r = reports.get(serial)
        if r is None or r.version != rollout.version:
            p.pending += 1
        else:
            p.by_state[r.state] = p.by_state.get(r.state, 0) + 1
    return p


SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
    version TEXT PRIMARY KEY, bundle TEXT NOT NULL, sha256 TEXT NOT NULL,
    size INTEGER NOT NULL, added_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, version TEXT NOT NULL REFERENCES releases(version),
    percent INTEGER NOT NULL, tenants TEXT NOT NULL, devices TEXT NOT NULL,
    created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS reports (
    serial TEXT PRIMARY KEY, version TEXT NOT NULL, state TEXT NOT NULL,
    running TEXT, detail TEXT NOT NULL, at REAL NOT NULL);
"""


def _sha256(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


class UpdateStore:
    def __init__(self, conn: sqlite3.Connection, clock: Callable[[], float]) -> None:
        self.conn = conn
        self.clock = clock

    @classmethod
    def open(cls, state_dir: Path, clock: Callable[[], float] = time.time) -> UpdateStore:
        conn = sqlite3.connect(
            state_dir / "updates.sqlite3", isolation_level=None, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(SCHEMA)
        return cls(conn, clock)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> UpdateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- releases -------------------------------------------------------------------------

    def add_release(self, version: str, bundle: Path) -> Release:
        """Record a bundle the operator built and signed (`cjb image bundle`). The device
        checks the signature (RAUC, against the operator CA); the gateway checks the hash it
        announces matches the file it serves."""
        check_version(version)
        bundle = bundle.resolve()
        if not bundle.is_file():
            raise UpdateError(f"bundle {bundle}: no such file")
        digest, size = _sha256(bundle)
        rel = Release(version, bundle, digest, size, self.clock())
        try:
            self.conn.execute(
                "INSERT INTO releases VALUES (?, ?, ?, ?, ?)",
                (version, str(bundle), digest, size, rel.added_at),
            )
        except sqlite3.IntegrityError:
            raise UpdateError(f"release {version} exists already: pick a new version") from None
        return rel

    def release(self, version: str) -> Release | None:
        r = self.conn.execute("SELECT * FROM releases WHERE version = ?", (version,)).fetchone()
        if r is None:
            return None
        return Release(r["version"], Path(r["bundle"]), r["sha256"], r["size"], r["added_at"])

    def releases(self) -> list[Release]:
        rows = self.conn.execute("SELECT version FROM releases ORDER BY added_at").fetchall()
        return [r for r in (self.release(row["version"]) for row in rows) if r is not None]

    # -- roll-outs ------------------------------------------------------------------------

    def start_rollout(self, rollout: Rollout) -> Rollout:
        if self.release(rollout.version) is None:
            known = ", ".join(r.version for r in self.releases()) or "none"
            raise UpdateError(
                f"no release {rollout.version}: add it first (`cjb gateway update release`); "
                f"known: {known}"
            )
        now = self.clock()
        self.conn.execute(
            "INSERT INTO rollouts (version, percent, tenants, devices, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                rollout.version,
                rollout.percent,
                json.dumps(sorted(rollout.tenants)),
                json.dumps(sorted(rollout.devices)),
                now,
            ),
        )
        return Rollout(rollout.version, rollout.percent, rollout.tenants, rollout.devices, now)

    def rollout(self) -> Rollout | None:
        """The current roll-out: the newest."""
        r = self.conn.execute("SELECT * FROM rollouts ORDER BY id DESC LIMIT 1").fetchone()
        if r is None:
            return None
        return Rollout(
            r["version"],
            r["percent"],
            frozenset(json.loads(r["tenants"])),
            frozenset(json.loads(r["devices"])),
            r["created_at"],
        )

    def offer(self, serial: str, tenant: str | None, running: str | None) -> Release | None:
        """The release this device should install now, or None (not selected, or running it)."""
        rollout = self.rollout()
        if rollout is None or not rollout.selects(serial, tenant) or running == rollout.version:
            return None
        last = self.report(serial)
        if last is not None and last.version == rollout.version and last.state in FAILED:
            return None  # it tried and came back: not again until a new roll-out
        return self.release(rollout.version)

    # -- reports --------------------------------------------------------------------------

    def record(
        self, serial: str, version: str, state: str, running: str | None, detail: str = ""
    ) -> Report:
        check_version(version)
        if state not in STATES:
            raise UpdateError(f"state {state!r}: one of {', '.join(STATES)}")
        rep = Report(serial, version, state, running, detail[:500], self.clock())
        self.conn.execute(
            "INSERT OR REPLACE INTO reports VALUES (?, ?, ?, ?, ?, ?)",
            (serial, version, state, running, rep.detail, rep.at),
        )
        return rep

    def report(self, serial: str) -> Report | None:
        r = self.conn.execute("SELECT * FROM reports WHERE serial = ?", (serial,)).fetchone()
        if r is None:
            return None
        return Report(r["serial"], r["version"], r["state"], r["running"], r["detail"], r["at"])

    def reports(self) -> dict[str, Report]:
        rows = self.conn.execute("SELECT serial FROM reports").fetchall()
        return {
            row["serial"]: rep for row in rows if (rep := self.report(row["serial"])) is not None
        }
