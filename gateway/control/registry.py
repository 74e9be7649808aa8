"""The gateway registry: inventory, tenants, enrollments, certificates, revocations, audit log.

SQLite (stdlib) in WAL mode with `synchronous=FULL`: every committed transaction survives a
`kill -9` (and a power cut). Writes take the write lock up front (`BEGIN IMMEDIATE`), so
allocations are serialized across threads *and* processes, and UNIQUE constraints back them up.

API for the data plane's reconciler — read-only, cheap, safe from any process:

    reg = Registry.open(state_dir / "registry.sqlite3")
    reg.generation()        # int; bumps on every desired-state change (poll; re-read on change)
    reg.desired_tunnels()   # list[TunnelSpec]: one per enrolled, unrevoked device
    reg.tenants()           # list[TenantRow]: VNI, overlay address, service IPv4, catalog, LAN MTU

A revoked device disappears from `desired_tunnels()`, so the reconciler removes its peer.
Row types are frozen dataclasses; nothing pydantic or sqlite3 leaks out.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cjb.gateway.control.errors import ControlError
from cjb.gateway.control.migrations import migrate

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

TENANT_NAME = re.compile(r"^[a-z][a-z0-9-]{0,11}$")  # the data plane's interface-name rule
DEVICE_STATES = ("inventory", "enrolled", "revoked")
_R = TypeVar("_R", bound="DataclassInstance")


@dataclass(frozen=True, slots=True)
class TenantRow:
    name: str
    vni: int | None
    overlay_address: ipaddress.IPv6Address | None
    service_ipv4: ipaddress.IPv4Address | None
    lan_prefix: str | None
    lan_router: str | None
    lan_mtu: int
    catalog: list[dict[str, Any]]
    config_version: int
    created_at: float


@dataclass(frozen=True, slots=True)
class DeviceRow:
    serial: str
    factory_public_key: str
    tenant: str | None
    model: str
    state: str
    wireguard_public_key: str | None
    enrolled_at: float | None
    last_seen: float | None
    last_peer: str | None
    heartbeat: dict[str, Any] | None
    created_at: float
    current_cert: str | None  # fingerprint of the one certificate that device may use


@dataclass(frozen=True, slots=True)
class OperatorRow:
    name: str
    salt: bytes
    hash: bytes
    created_at: float
    revoked_at: float | None
    last_used_at: float | None


@dataclass(frozen=True, slots=True)
class CertRow:
    fingerprint: str
    serial_number: int
    device: str
    issued_at: float
    not_after: float
    revoked_at: float | None


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: int
    at: float
    event: str
    serial: str | None
    peer: str | None
    reason: str | None
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TunnelSpec:
    """Desired state of one appliance tunnel (what the reconciler builds)."""

    tenant: str
    serial: str
    vni: int
    overlay_address: ipaddress.IPv6Address
    wireguard_public_key: str
    service_ipv4: ipaddress.IPv4Address | None
    lan_mtu: int


@dataclass(frozen=True, slots=True)
class AuditLimits:
    """Retention of the audit log: at most `max_rows` rows, none older than `max_age` s."""

    max_rows: int = 100_000
    max_age: float = 365 * 86400.0


@dataclass(frozen=True, slots=True)
class Allocation:
    """Overlay/VNI plan handed to the registry (from settings.toml)."""

    first_vni: int
    overlay_prefix: ipaddress.IPv6Network
    first_device: ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class EnrollmentRecord:
    """Everything a successful enrollment writes, checked again inside the transaction."""

    serial: str
    factory_public_key: str
    wireguard_public_key: str
    service_ipv4: ipaddress.IPv4Address
    lan_prefix: str
    lan_router: str | None
    lan_mtu: int
    lan_json: str
    cert_fingerprint: str
    cert_serial_number: int
    cert_not_after: float
    peer: str | None


def _from_row(cls: type[_R], r: sqlite3.Row, **converted: Any) -> _R:
    """A row dataclass from a result row: each field from the column of the same name, except
    those given in `converted` (parsed or renamed)."""
    taken = {f.name: r[f.name] for f in fields(cls) if f.name not in converted}
    return cls(**taken, **converted)


def _ipv4(value: str | None) -> ipaddress.IPv4Address | None:
    return ipaddress.IPv4Address(value) if value else None


def _tenant(r: sqlite3.Row) -> TenantRow:
    return _from_row(
        TenantRow,
        r,
        overlay_address=ipaddress.IPv6Address(r["overlay_address"])
        if r["overlay_address"]
        else None,
        service_ipv4=_ipv4(r["service_ipv4"]),
        catalog=json.loads(r["catalog_json"]),
    )


def _device(r: sqlite3.Row) -> DeviceRow:
    return _from_row(
        DeviceRow,
        r,
        heartbeat=json.loads(r["heartbeat_json"]) if r["heartbeat_json"] else None,
    )


class Registry:
    """One connection, guarded by a lock so asyncio.to_thread workers can share it."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        clock: Callable[[], float],
        audit_limits: AuditLimits | None = None,
    ) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._clock = clock
        self.audit_limits = audit_limits or AuditLimits()

    @classmethod
    def open(
        cls,
        path: Path,
        clock: Callable[[], float] = time.time,
        audit_limits: AuditLimits | None = None,
    ) -> Registry:
        conn = sqlite3.connect(
            path, isolation_level=None, timeout=30.0, check_same_thread=False
        )  # isolation_level=None: we issue BEGIN/COMMIT ourselves
        conn.row_factory = sqlite3.Row
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise ControlError("registry", f"{path}: cannot switch to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            migrate(conn, clock)
        except BaseException:
            conn.close()  # e.g. a schema too new: leave the files as they were
            raise
        return cls(conn, clock, audit_limits)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    @staticmethod
    def _device_state(c: sqlite3.Connection, serial: str) -> str:
        row = c.execute("SELECT state FROM devices WHERE serial = ?", (serial,)).fetchone()
        if row is None:
            raise ControlError("unknown-serial", f"no device {serial} in the inventory", 404)
        return str(row["state"])

    def _existing_device(self, serial: str) -> DeviceRow:
        device = self.device(serial)
        assert device is not None
        return device

    @staticmethod
    def _bump(c: sqlite3.Connection) -> None:
        c.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")

    def _audit(
        self,
        c: sqlite3.Connection,
        at: float,
        event: str,
        serial: str | None,
        peer: str | None,
        reason: str | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        c.execute(
            "INSERT INTO audit (at, event, serial, peer, reason, detail_json) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (at, event, serial, peer, reason, json.dumps(detail or {}, sort_keys=True)),
        )
        # Retention on every write, in the same transaction: range deletes on indexes, after
        # adding what the pruned rows counted to audit_pruned_counts.
        limits = self.audit_limits
        pruned = 0
        for where, arg in (
            ("id <= (SELECT MAX(id) FROM audit) - ?", limits.max_rows),
            ("at < ?", at - limits.max_age),
        ):
            c.execute(
                "INSERT INTO audit_pruned_counts (event, reason, n) "  # noqa: S608 (fixed)
                f"SELECT event, COALESCE(reason, ''), COUNT(*) FROM audit WHERE {where} "
                "GROUP BY 1, 2 ORDER BY 1, 2 "
                "ON CONFLICT (event, reason) DO UPDATE SET n = n + excluded.n",
                (arg,),
            )
            pruned += c.execute(f"DELETE FROM audit WHERE {where}", (arg,)).rowcount  # noqa: S608
        if pruned:
            c.execute("UPDATE meta SET value = value + ? WHERE key = 'audit_pruned'", (pruned,))

    # -- reads ------------------------------------------------------------------------------

    def generation(self) -> int:
        return int(self._read("SELECT value FROM meta WHERE key = 'generation'")[0][0])

    def audit_pruned(self) -> int:
        """Audit rows removed by retention (AuditLimits) since the registry was created."""
        return int(self._read("SELECT value FROM meta WHERE key = 'audit_pruned'")[0][0])

    def audit_rows(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM audit")[0][0])

    def schema_versions(self) -> list[int]:
        return [r[0] for r in self._read("SELECT version FROM schema_migrations ORDER BY 1")]

    def tenant(self, name: str) -> TenantRow | None:
        rows = self._read("SELECT * FROM tenants WHERE name = ?", (name,))
        return _tenant(rows[0]) if rows else None

    def tenants(self) -> list[TenantRow]:
        return [_tenant(r) for r in self._read("SELECT * FROM tenants ORDER BY name")]

    def device(self, serial: str) -> DeviceRow | None:
        rows = self._read("SELECT * FROM devices WHERE serial = ?", (serial,))
        return _device(rows[0]) if rows else None

    def devices(self, tenant: str | None = None) -> list[DeviceRow]:
        if tenant is None:
            return [_device(r) for r in self._read("SELECT * FROM devices ORDER BY serial")]
        rows = self._read("SELECT * FROM devices WHERE tenant = ? ORDER BY serial", (tenant,))
        return [_device(r) for r in rows]

    def certificate(self, fingerprint: str) -> CertRow | None:
        rows = self._read("SELECT * FROM certificates WHERE fingerprint = ?", (fingerprint,))
        return CertRow(**dict(rows[0])) if rows else None

    def certificates(self, serial: str) -> list[CertRow]:
        rows = self._read(
            "SELECT * FROM certificates WHERE device = ? ORDER BY issued_at", (serial,)
        )
        return [CertRow(**dict(r)) for r in rows]

    def audit_log(self, serial: str | None = None, limit: int = 100) -> list[AuditRow]:
        where, args = ("WHERE serial = ?", (serial,)) if serial else ("", ())
        rows = self._read(f"SELECT * FROM audit {where} ORDER BY id DESC LIMIT ?", (*args, limit))  # noqa: S608 (fixed fragments)
        return [_from_row(AuditRow, r, detail=json.loads(r["detail_json"])) for r in rows]

    def enrollment_outcomes(self) -> dict[str, int]:
        """Enrollment attempts by outcome since the registry was created (pruned rows too)."""
        rows = self._read(
            "SELECT event, NULLIF(reason, ''), SUM(n) FROM ("
            "SELECT event, COALESCE(reason, '') AS reason, COUNT(*) AS n FROM audit "
            "GROUP BY 1, 2 UNION ALL SELECT event, reason, n FROM audit_pruned_counts"
            ") GROUP BY 1, 2"
        )
        out: dict[str, int] = {}
        for event, reason, n in rows:
            if event == "enroll-ok":
                out["ok"] = out.get("ok", 0) + n
            elif event in ("enroll-refused", "clone-alert"):
                out[reason or "refused"] = out.get(reason or "refused", 0) + n
        return out

    def device_states(self) -> dict[str, int]:
        counts = dict.fromkeys(DEVICE_STATES, 0)
        for state, n in self._read("SELECT state, COUNT(*) FROM devices GROUP BY state"):
            counts[state] = n
        return counts

    def desired_tunnels(self) -> list[TunnelSpec]:
        rows = self._read(
            "SELECT d.serial, d.wireguard_public_key, t.* FROM devices d "
            "JOIN tenants t ON t.name = d.tenant "
            "WHERE d.state = 'enrolled' ORDER BY t.name"
        )
        return [
            _from_row(
                TunnelSpec,
                r,
                tenant=r["name"],
                overlay_address=ipaddress.IPv6Address(r["overlay_address"]),
                service_ipv4=_ipv4(r["service_ipv4"]),
            )
            for r in rows
        ]

    # -- inventory --------------------------------------------------------------------------

    def add_device(
        self, serial: str, factory_public_key: str, tenant: str | None, model: str
    ) -> bool:
        """Add one unit; True if added, False if the identical record was already there."""
        return self.import_records([(serial, factory_public_key, tenant, model)])[0] == 1

    def import_records(
        self, records: Iterable[tuple[str, str, str | None, str]]
    ) -> tuple[int, int]:
        """All or nothing: (added, unchanged). A serial already present with another key or
        tenant is an error naming it (a typo or a clone in the flashing records)."""
        now = self._clock()
        added = unchanged = 0
        with self._tx() as c:
            for serial, key, tenant, model in records:
                if tenant is not None and not TENANT_NAME.match(tenant):
                    raise ControlError(
                        "bad-tenant-name",
                        f"tenant {tenant!r}: use 1-12 of a-z, 0-9, '-', starting with a letter",
                    )
                old = c.execute("SELECT * FROM devices WHERE serial = ?", (serial,)).fetchone()
                if old is not None:
                    if old["factory_public_key"] == key and old["tenant"] == tenant:
                        unchanged += 1
                        continue
                    raise ControlError(
                        "serial-exists",
                        f"serial {serial} is already in the inventory with another "
                        "factory key or tenant; nothing was imported",
                        status=409,
                    )
                if tenant is not None:
                    c.execute(
                        "INSERT OR IGNORE INTO tenants (name, created_at) VALUES (?, ?)",
                        (tenant, now),
                    )
                c.execute(
                    "INSERT INTO devices (serial, factory_public_key, tenant, model, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (serial, key, tenant, model, now),
                )
                self._audit(c, now, "inventory-add", serial, None, None, {"tenant": tenant})
                added += 1
            if added:
                self._bump(c)
        return added, unchanged

    def revoke(self, serial: str, reason: str, by: str) -> DeviceRow:
        now = self._clock()
        with self._tx() as c:
            state = self._device_state(c, serial)
            if state != "revoked":
                c.execute("UPDATE devices SET state = 'revoked' WHERE serial = ?", (serial,))
                c.execute(
                    "UPDATE certificates SET revoked_at = ? "
                    "WHERE device = ? AND revoked_at IS NULL",
                    (now, serial),
                )
                c.execute(
                    "INSERT INTO revocations (device, at, reason, by) VALUES (?, ?, ?, ?)",
                    (serial, now, reason, by),
                )
                self._audit(c, now, "revoked", serial, None, reason, {"by": by})
                self._bump(c)
        return self._existing_device(serial)

    def reinstate(self, serial: str, by: str) -> DeviceRow:
        """Back to 'inventory' after a revoke (e.g. a factory-reset unit): the WireGuard binding
        is cleared so it can enroll afresh; its old certificates stay revoked."""
        now = self._clock()
        with self._tx() as c:
            state = self._device_state(c, serial)
            if state != "revoked":
                raise ControlError(
                    "not-revoked", f"device {serial} is {state}; revoke it first", 409
                )
            c.execute(
                "UPDATE devices SET state = 'inventory', wireguard_public_key = NULL "
                "WHERE serial = ?",
                (serial,),
            )
            self._audit(c, now, "reinstated", serial, None, None, {"by": by})
            self._bump(c)
        return self._existing_device(serial)

    def set_catalog(self, tenant: str, catalog: list[dict[str, Any]]) -> TenantRow:
        with self._tx() as c:
            cur = c.execute(
                "UPDATE tenants SET catalog_json = ?, config_version = config_version + 1 "
                "WHERE name = ?",
                (json.dumps(catalog, sort_keys=True), tenant),
            )
            if cur.rowcount == 0:
                raise ControlError("unknown-tenant", f"no tenant {tenant!r}", 404)
            self._audit(c, self._clock(), "catalog-set", None, None, None, {"tenant": tenant})
            self._bump(c)
        row = self.tenant(tenant)
        assert row is not None
        return row

    def audit(
        self,
        event: str,
        serial: str | None,
        peer: str | None,
        reason: str | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        with self._tx() as c:
            self._audit(c, self._clock(), event, serial, peer, reason, detail)

    # -- enrollment and heartbeats ----------------------------------------------------------

    def commit_enrollment(
        self, rec: EnrollmentRecord, plan: Allocation
    ) -> tuple[DeviceRow, TenantRow]:
        """Bind the device, allocate its tenant's VNI and overlay address if new, record the
        certificate. Every precondition is checked again here, under the write lock, so a
        clone racing the original (or two requests racing) cannot both win."""
        now = self._clock()
        with self._tx() as c:
            dev = c.execute("SELECT * FROM devices WHERE serial = ?", (rec.serial,)).fetchone()
            if dev is None:
                raise ControlError(
                    "unknown-serial", f"serial {rec.serial} is not in the inventory", 403
                )
            if dev["state"] == "revoked":
                raise ControlError("device-revoked", f"device {rec.serial} is revoked", 403)
            if dev["factory_public_key"] != rec.factory_public_key:
                raise ControlError(
                    "factory-key-mismatch", "factory key does not match the inventory", 403
                )
            bound = dev["wireguard_public_key"]
            if dev["state"] == "enrolled" and bound != rec.wireguard_public_key:
                raise ControlError(
                    "clone-suspected",
                    f"serial {rec.serial} is already enrolled with another WireGuard key; "
                    "if the unit was reset, the operator revokes and reinstates it",
                    409,
                )
            tenant_name = dev["tenant"]
            if tenant_name is None:
                raise ControlError("device-unassigned", f"device {rec.serial} has no tenant", 409)
            t = c.execute("SELECT * FROM tenants WHERE name = ?", (tenant_name,)).fetchone()
            changed = False
            if t["vni"] is None:
                self._allocate(c, tenant_name, plan)
                changed = True
            lan = (str(rec.service_ipv4), rec.lan_prefix, rec.lan_router, rec.lan_mtu)
            if (t["service_ipv4"], t["lan_prefix"], t["lan_router"], t["lan_mtu"]) != lan:
                c.execute(
                    "UPDATE tenants SET service_ipv4 = ?, lan_prefix = ?, lan_router = ?, "
                    "lan_mtu = ? WHERE name = ?",
                    (*lan, tenant_name),
                )
                changed = True
            if changed and t["vni"] is not None:
                c.execute(
                    "UPDATE tenants SET config_version = config_version + 1 WHERE name = ?",
                    (tenant_name,),
                )
            try:
                c.execute(
                    "UPDATE devices SET state = 'enrolled', wireguard_public_key = ?, "
                    "enrolled_at = ?, last_peer = ? WHERE serial = ?",
                    (rec.wireguard_public_key, now, rec.peer, rec.serial),
                )
            except sqlite3.IntegrityError as exc:
                other = c.execute(
                    "SELECT serial FROM devices WHERE tenant = ? AND state = 'enrolled' "
                    "AND serial != ?",
                    (tenant_name, rec.serial),
                ).fetchone()
                if other is not None:
                    raise ControlError(
                        "tenant-has-device",
                        f"tenant {tenant_name} already has enrolled device {other[0]}; "
                        "revoke it first to replace it",
                        409,
                    ) from None
                raise ControlError(
                    "wireguard-key-in-use",
                    f"that WireGuard public key belongs to another device ({exc})",
                    409,
                ) from None
            # The new certificate replaces every earlier one of this device: a copy of an old
            # certificate and its key (a cloned or resold unit) stops working now.
            superseded = c.execute(
                "UPDATE certificates SET revoked_at = ? WHERE device = ? AND revoked_at IS NULL",
                (now, rec.serial),
            ).rowcount
            c.execute(
                "INSERT INTO certificates (fingerprint, serial_number, device, issued_at, "
                "not_after) VALUES (?, ?, ?, ?, ?)",
                (rec.cert_fingerprint, rec.cert_serial_number, rec.serial, now, rec.cert_not_after),
            )
            c.execute(
                "UPDATE devices SET current_cert = ? WHERE serial = ?",
                (rec.cert_fingerprint, rec.serial),
            )
            c.execute(
                "INSERT INTO enrollments (device, at, peer, wireguard_public_key, certificate, "
                "lan_json) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    rec.serial,
                    now,
                    rec.peer,
                    rec.wireguard_public_key,
                    rec.cert_fingerprint,
                    rec.lan_json,
                ),
            )
            self._audit(
                c,
                now,
                "enroll-ok",
                rec.serial,
                rec.peer,
                None,
                {
                    "tenant": tenant_name,
                    "certificate": rec.cert_fingerprint,
                    "superseded_certificates": superseded,
                },
            )
            self._bump(c)
        device, tenant = self.device(rec.serial), self.tenant(tenant_name)
        assert device is not None and tenant is not None
        return device, tenant

    @staticmethod
    def _allocate(c: sqlite3.Connection, tenant: str, plan: Allocation) -> None:
        # Never reused (MAX + 1): a freed VNI or address cannot reach a stale peer.
        vni = c.execute("SELECT MAX(vni) FROM tenants").fetchone()[0]
        vni = plan.first_vni if vni is None else max(vni + 1, plan.first_vni)
        idx = c.execute("SELECT MAX(overlay_index) FROM tenants").fetchone()[0]
        idx = 0 if idx is None else idx + 1
        address = plan.first_device + idx
        if vni > 0xFFFFFF or address not in plan.overlay_prefix:
            raise ControlError(
                "allocation-exhausted",
                "no VNI or overlay address left; widen [overlay] prefix / lower first_vni",
                507,
            )
        c.execute(
            "UPDATE tenants SET vni = ?, overlay_index = ?, overlay_address = ? WHERE name = ?",
            (vni, idx, str(address), tenant),
        )

    def record_heartbeat(self, serial: str, peer: str | None, heartbeat: dict[str, Any]) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE devices SET last_seen = ?, last_peer = ?, heartbeat_json = ? "
                "WHERE serial = ?",
                (self._clock(), peer, json.dumps(heartbeat, sort_keys=True), serial),
            )

    # -- operator credentials (operators.py hashes; only hashes are stored) -------------------

    def add_operator(self, name: str, salt: bytes, digest: bytes) -> None:
        now = self._clock()
        with self._tx() as c:
            old = c.execute("SELECT revoked_at FROM operators WHERE name = ?", (name,)).fetchone()
            if old is not None:
                raise ControlError(
                    "operator-exists",
                    f"operator credential {name!r} exists"
                    + (" (revoked; names are not reused)" if old[0] is not None else "")
                    + "; choose another name",
                    409,
                )
            c.execute(
                "INSERT INTO operators (name, salt, hash, created_at) VALUES (?, ?, ?, ?)",
                (name, salt, digest, now),
            )
            self._audit(c, now, "operator-added", None, None, None, {"name": name})

    def operator(self, name: str) -> OperatorRow | None:
        rows = self._read("SELECT * FROM operators WHERE name = ?", (name,))
        return OperatorRow(**dict(rows[0])) if rows else None

    def operators(self) -> list[OperatorRow]:
        return [OperatorRow(**dict(r)) for r in self._read("SELECT * FROM operators ORDER BY 1")]

    def revoke_operator(self, name: str) -> OperatorRow:
        now = self._clock()
        with self._tx() as c:
            cur = c.execute(
                "UPDATE operators SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (now, name),
            )
            if cur.rowcount == 0:
                known = c.execute("SELECT 1 FROM operators WHERE name = ?", (name,)).fetchone()
                raise ControlError(
                    "unknown-operator",
                    f"operator credential {name!r} "
                    + ("is already revoked" if known else "does not exist"),
                    404,
                )
            self._audit(c, now, "operator-revoked", None, None, None, {"name": name})
        row = self.operator(name)
        assert row is not None
        return row

    def operator_used(self, name: str) -> None:
        with self._tx() as c:
            c.execute("UPDATE operators SET last_used_at = ? WHERE name = ?", (self._clock(), name))

    def integrity_check(self) -> str:
        return str(self._read("PRAGMA integrity_check")[0][0])
