"""The registry schema, as ordered migrations. Append new versions; never edit applied ones.

`schema_migrations` records what ran. Each migration runs inside one transaction together with
its row in that table, so a crash leaves either all of it or none of it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from cjb.gateway.control.errors import ControlError

# (version, statements). Times are UNIX seconds (REAL); keys are base64 text.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE meta (
                key TEXT PRIMARY KEY,
                value INTEGER NOT NULL
            )""",
            "INSERT INTO meta (key, value) VALUES ('generation', 0)",
            """CREATE TABLE tenants (
                name TEXT PRIMARY KEY,
                vni INTEGER UNIQUE CHECK (vni BETWEEN 1 AND 16777215),
                overlay_index INTEGER UNIQUE CHECK (overlay_index >= 0),
                overlay_address TEXT UNIQUE,
                service_ipv4 TEXT,
                lan_prefix TEXT,
                lan_router TEXT,
                lan_mtu INTEGER NOT NULL DEFAULT 1500,
                catalog_json TEXT NOT NULL DEFAULT '[]',
                config_version INTEGER NOT NULL DEFAULT 1,
                created_at REAL NOT NULL,
                CHECK ((vni IS NULL) = (overlay_address IS NULL))
            )""",
            """CREATE TABLE devices (
                serial TEXT PRIMARY KEY,
                factory_public_key TEXT NOT NULL,
                tenant TEXT REFERENCES tenants(name),
                model TEXT NOT NULL,
                state TEXT NOT NULL DEFAULT 'inventory'
                    CHECK (state IN ('inventory', 'enrolled', 'revoked')),
                wireguard_public_key TEXT UNIQUE,
                enrolled_at REAL,
                last_seen REAL,
                last_peer TEXT,
                heartbeat_json TEXT,
                created_at REAL NOT NULL
            )""",
            # One enrolled appliance per tenant: the data plane binds the tenant's VNI to one
            # overlay address (docs/decisions/0004-wireguard-then-vxlan.md, RFC 7348 §7). A
            # replacement enrolls after a revoke.
            """CREATE UNIQUE INDEX one_enrolled_device_per_tenant
                ON devices(tenant) WHERE state = 'enrolled'""",
            """CREATE TABLE certificates (
                fingerprint TEXT PRIMARY KEY,
                serial_number INTEGER NOT NULL UNIQUE,
                device TEXT NOT NULL REFERENCES devices(serial),
                issued_at REAL NOT NULL,
                not_after REAL NOT NULL,
                revoked_at REAL
            )""",
            """CREATE TABLE enrollments (
                id INTEGER PRIMARY KEY,
                device TEXT NOT NULL REFERENCES devices(serial),
                at REAL NOT NULL,
                peer TEXT,
                wireguard_public_key TEXT NOT NULL,
                certificate TEXT NOT NULL REFERENCES certificates(fingerprint),
                lan_json TEXT NOT NULL
            )""",
            """CREATE TABLE revocations (
                id INTEGER PRIMARY KEY,
                device TEXT NOT NULL REFERENCES devices(serial),
                at REAL NOT NULL,
                reason TEXT NOT NULL,
                by TEXT NOT NULL
            )""",
            """CREATE TABLE audit (
                id INTEGER PRIMARY KEY,
                at REAL NOT NULL,
                event TEXT NOT NULL,
                serial TEXT,
                peer TEXT,
                reason TEXT,
                detail_json TEXT NOT NULL DEFAULT '{}'
            )""",
            "CREATE INDEX audit_by_serial ON audit(serial, at)",
            "CREATE INDEX certificates_by_device ON certificates(device)",
        ),
    ),
    (
        2,
        (
            # Named, revocable operator credentials; only a salted scrypt hash is stored.
            """CREATE TABLE operators (
                name TEXT PRIMARY KEY,
                salt BLOB NOT NULL,
                hash BLOB NOT NULL,
                created_at REAL NOT NULL,
                revoked_at REAL,
                last_used_at REAL
            )""",
            # The one certificate a device may use: re-enrollment replaces (and revokes) it.
            "ALTER TABLE devices ADD COLUMN current_cert TEXT",
            """UPDATE devices SET current_cert = (
                SELECT c.fingerprint FROM certificates c
                WHERE c.device = devices.serial AND c.revoked_at IS NULL
                ORDER BY c.issued_at DESC LIMIT 1)""",
            # Audit retention prunes by age and by id.
            "CREATE INDEX audit_by_time ON audit(at)",
            "INSERT INTO meta (key, value) VALUES ('audit_pruned', 0)",
            # What pruned rows counted, so counters read from the log never go down.
            """CREATE TABLE audit_pruned_counts (
                event TEXT NOT NULL,
                reason TEXT NOT NULL,
                n INTEGER NOT NULL,
                PRIMARY KEY (event, reason)
            )""",
        ),
    ),
)


def newest_version() -> int:
    return max(v for v, _ in MIGRATIONS)


def migrate(conn: sqlite3.Connection, now: Callable[[], float]) -> list[int]:
    """Apply what is missing, in order; returns the versions applied (empty: already current).

    A registry a newer CJB has migrated further is refused before anything is written: this
    code cannot know what the newer schema means, so running on it could corrupt it."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    newest = newest_version()
    known = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]
    if known is not None and known > newest:
        raise ControlError(
            "registry-schema-too-new",
            f"the registry's schema version {known} is newer than this CJB knows ({newest}): "
            "a newer CJB wrote it, and this one refuses to open it rather than risk it; "
            "install that newer CJB again (downgrades are not supported)",
            status=500,
        )
    applied: list[int] = []
    for version, statements in MIGRATIONS:
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = conn.execute(
                "SELECT 1 FROM schema_migrations WHERE version = ?", (version,)
            ).fetchone()
            if done is None:
                for sql in statements:
                    conn.execute(sql)
                conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (version, now()),
                )
                applied.append(version)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return applied
