"""The registry, migrations and sans-IO cores of the control plane, on real SQLite files."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from controlkit import Device

from cjb.gateway.control.errors import ControlError
from cjb.gateway.control.migrations import MIGRATIONS, migrate, newest_version
from cjb.gateway.control.nonces import NonceStore, NonceVerdict
from cjb.gateway.control.ratelimit import RateLimiter
from cjb.gateway.control.registry import Allocation, EnrollmentRecord, Registry
from cjb.gateway.control.settings import SettingsError, load_settings, load_text
from cjb.gateway.control.statedir import StateDir, init_state_dir

PLAN = Allocation(
    100, ipaddress.IPv6Network("fd63:6a62:77::/64"), ipaddress.IPv6Address("fd63:6a62:77::100")
)


def _record(dev: Device, fp: str, n: int) -> EnrollmentRecord:
    return EnrollmentRecord(
        serial=dev.serial,
        factory_public_key=dev.factory_public,
        wireguard_public_key=dev.wg_public,
        service_ipv4=ipaddress.IPv4Address("192.168.0.100"),
        lan_prefix="192.168.0.0/24",
        lan_router=None,
        lan_mtu=1500,
        lan_json="{}",
        cert_fingerprint=fp,
        cert_serial_number=n,
        cert_not_after=2e9,
        peer="127.0.0.1",
    )


# -- migrations --------------------------------------------------------------------------


def test_migrations_from_empty_and_rerun_is_noop(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite3"
    conn = sqlite3.connect(db, isolation_level=None)
    assert migrate(conn, lambda: 1.0) == [v for v, _ in MIGRATIONS]
    schema = conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    assert migrate(conn, lambda: 2.0) == []
    assert conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == schema
    assert conn.execute("SELECT version, applied_at FROM schema_migrations").fetchall() == [
        (v, 1.0) for v, _ in MIGRATIONS
    ]
    conn.close()
    with Registry.open(db) as reg:  # opening again migrates nothing
        assert reg.schema_versions() == [v for v, _ in MIGRATIONS]
        assert reg.integrity_check() == "ok"
        mode = reg._read("PRAGMA journal_mode")[0][0]
        assert mode == "wal"


def test_newer_schema_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """A downgraded CJB meets a registry a newer one migrated: it refuses, names both
    versions, and leaves every byte of the registry as it was."""
    db = tmp_path / "r.sqlite3"
    Registry.open(db).close()
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO schema_migrations VALUES (99, 0)")
    conn.execute("CREATE TABLE from_the_future (x)")
    conn.commit()
    conn.close()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(
        ControlError,
        match=rf"schema version 99 is newer than this CJB knows \({newest_version()}\)",
    ):
        Registry.open(db)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    state = tmp_path / "gw"
    init_state_dir(state, ["gw.test"], "gw.test:51820", "::", 8443)
    conn = sqlite3.connect(StateDir(state).registry)
    conn.execute("INSERT INTO schema_migrations VALUES (?, 0)", (newest_version() + 1,))
    conn.commit()
    conn.close()
    from click.testing import CliRunner

    from cjb.cli.main import main

    result = CliRunner().invoke(main, ["gateway", "device", "list", "--state-dir", str(state)])
    assert result.exit_code == 1
    newer = (
        f"schema version {newest_version() + 1} is newer than this CJB knows ({newest_version()})"
    )
    assert newer in result.output
    assert "downgrades are not supported" in result.output


# -- inventory and allocation --------------------------------------------------------------


def test_import_is_all_or_nothing_and_names_the_conflict(tmp_path: Path) -> None:
    with Registry.open(tmp_path / "r.sqlite3") as reg:
        a, b = Device("A"), Device("B")
        assert reg.import_records([(a.serial, a.factory_public, "acme", "m")]) == (1, 0)
        with pytest.raises(ControlError, match="serial A is already in the inventory"):
            reg.import_records(
                [(b.serial, b.factory_public, "acme", "m"), ("A", b.factory_public, "acme", "m")]
            )
        assert reg.device("B") is None  # rolled back with the conflict
        assert reg.import_records([(a.serial, a.factory_public, "acme", "m")]) == (0, 1)
        with pytest.raises(ControlError, match="tenant 'Bad_Name'"):
            reg.import_records([("C", b.factory_public, "Bad_Name", "m")])


def test_enrollment_allocates_once_and_replacement_keeps_tenant_allocation(tmp_path: Path) -> None:
    with Registry.open(tmp_path / "r.sqlite3") as reg:
        a, b = Device("A"), Device("B")
        reg.add_device("A", a.factory_public, "acme", "m")
        reg.add_device("B", b.factory_public, "acme", "m")
        gen = reg.generation()
        _, t = reg.commit_enrollment(_record(a, "f1", 1), PLAN)
        assert (t.vni, str(t.overlay_address)) == (100, "fd63:6a62:77::100")
        assert reg.generation() > gen
        _, t2 = reg.commit_enrollment(_record(a, "f2", 2), PLAN)  # idempotent
        assert (t2.vni, t2.overlay_address, t2.config_version) == (
            t.vni,
            t.overlay_address,
            t.config_version,
        )
        with pytest.raises(ControlError) as exc:  # one enrolled appliance per tenant
            reg.commit_enrollment(_record(b, "f3", 3), PLAN)
        assert exc.value.code == "tenant-has-device"
        reg.revoke("A", "replaced", "test")
        assert reg.certificates("A")[0].revoked_at is not None
        _, t3 = reg.commit_enrollment(_record(b, "f3", 3), PLAN)
        assert (t3.vni, t3.overlay_address) == (t.vni, t.overlay_address)
        assert [x.serial for x in reg.desired_tunnels()] == ["B"]
        # A factory-reset A comes back: reinstated, it enrolls with a new WireGuard key once
        # the tenant's slot is free again.
        with pytest.raises(ControlError, match="revoke it first"):
            reg.reinstate("B", "test")
        reg.revoke("B", "swap back", "test")
        reg.reinstate("A", "test")
        reset = Device("A", factory_key=a.factory_key)
        dev, t4 = reg.commit_enrollment(_record(reset, "f4", 4), PLAN)
        assert dev.wireguard_public_key == reset.wg_public and t4.vni == t.vni
        assert reg.certificates("A")[0].revoked_at is not None  # old certs stay revoked
        assert [e.event for e in reg.audit_log("A", 3)] == ["enroll-ok", "reinstated", "revoked"]
        assert reg.integrity_check() == "ok"


_WORKER = """
import ipaddress, sys
from cjb.gateway.control.registry import Allocation, EnrollmentRecord, Registry
plan = Allocation(100, ipaddress.IPv6Network("fd63:6a62:77::/64"),
                  ipaddress.IPv6Address("fd63:6a62:77::100"))
reg = Registry.open(sys.argv[1])
for line in sys.stdin:
    serial, fpk, wg = line.split()
    reg.commit_enrollment(EnrollmentRecord(serial, fpk, wg, ipaddress.IPv4Address("10.0.0.2"),
        "10.0.0.0/24", None, 1500, "{}", "fp-" + serial, abs(hash(serial)) % 2**62 + 1, 2e9,
        None), plan)
"""


def test_allocation_unique_across_processes(tmp_path: Path) -> None:
    """4 processes enroll 40 tenants at once against one file: no duplicate VNI/address."""
    db = tmp_path / "r.sqlite3"
    devices = [Device(f"S{i:02d}") for i in range(40)]
    with Registry.open(db) as reg:
        reg.import_records(
            [(d.serial, d.factory_public, f"t{i}", "m") for i, d in enumerate(devices)]
        )
    procs = []
    for k in range(4):
        lines = "".join(f"{d.serial} {d.factory_public} {d.wg_public}\n" for d in devices[k::4])
        p = subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(db)],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append((p, lines))
    for p, lines in procs:
        _, err = p.communicate(lines, timeout=120)
        assert p.returncode == 0, err
    with Registry.open(db) as reg:
        tunnels = reg.desired_tunnels()
        assert len(tunnels) == 40
        assert sorted(t.vni for t in tunnels) == list(range(100, 140))
        assert len({t.overlay_address for t in tunnels}) == 40


# -- nonces and rate limits (sans-IO, injected time) --------------------------------------


def test_nonce_store_one_time_expiry_and_bound() -> None:
    store = NonceStore(ttl=120, cap=16)
    n = store.issue(0.0, bytes(32))
    assert len(n) == 43 and base64.urlsafe_b64decode(n + "=") == bytes(32)
    assert store.consume(n, 10.0) is NonceVerdict.OK
    assert store.consume(n, 11.0) is NonceVerdict.REPLAYED
    late = store.issue(20.0, os.urandom(32))
    assert store.consume(late, 20.0 + 121) is NonceVerdict.EXPIRED
    assert store.consume("x" * 43, 0) is NonceVerdict.UNKNOWN
    # A flood of 10,000 nonce requests: memory stays at the cap, the oldest are forgotten.
    first = store.issue(200.0, os.urandom(32))
    for i in range(10_000):
        store.issue(200.0 + i * 1e-3, os.urandom(32))
    assert len(store) <= 2 * store.cap
    assert store.evicted >= 10_000 - 16
    assert store.consume(first, 215.0) is NonceVerdict.UNKNOWN
    # Old entries leave with time even without pressure.
    store.issue(10_000.0, os.urandom(32))
    assert len(store) == 1


def test_rate_limiter_bucket_and_bound() -> None:
    rl = RateLimiter(rate=2.0, burst=3, max_clients=100)
    assert [rl.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert rl.allow("b", 0.0)  # per key
    assert rl.allow("a", 0.5)  # one token back after 0.5 s at 2/s
    assert not rl.allow("a", 0.5)
    for i in range(10_000):
        rl.allow(f"10.0.{i // 256}.{i % 256}", 1.0)
    assert len(rl) == 100


# -- state dir and settings ---------------------------------------------------------------


def test_init_creates_keys_0600_and_refuses_overwrite(tmp_path: Path) -> None:
    root = tmp_path / "gw"
    old = os.umask(0)  # the modes must not depend on the caller's umask
    try:
        layout = init_state_dir(root, ["gw.example", "192.0.2.1"], "192.0.2.1:51820")
    finally:
        os.umask(old)
    for secret in (layout.ca_key, layout.server_key, layout.wg_private, layout.settings):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    assert stat.S_IMODE(layout.registry.stat().st_mode) == 0o600
    assert stat.S_IMODE(layout.desired.stat().st_mode) == 0o640
    assert stat.S_IMODE(layout.wg_public.stat().st_mode) == 0o644
    assert stat.S_IMODE(layout.api_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(layout.dataplane_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(layout.export_dir.stat().st_mode) == 0o2750
    wg_priv = base64.b64decode(layout.wg_private.read_text().strip())
    assert len(wg_priv) == 32 and len(base64.b64decode(layout.wg_public_key())) == 32
    from cryptography import x509

    server = x509.load_pem_x509_certificate(layout.server_cert.read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["gw.example"]
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ["192.0.2.1"]
    settings = load_settings(layout.settings)
    assert settings.wireguard.endpoint == "192.0.2.1:51820"
    assert "# " in layout.settings.read_text()  # commented defaults
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with pytest.raises(ControlError, match="refusing to overwrite"):
        init_state_dir(root, ["x"], "y:1")
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_settings_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"api.prot"):
        load_text("[api]\nprot = 1\n", tmp_path / "g.toml")
    with pytest.raises(SettingsError, match=r"inside overlay\.prefix"):
        load_text('[overlay]\nfirst_device = "fd00::100"\n', tmp_path / "g.toml")
    with pytest.raises(SettingsError, match="no such file"):
        load_settings(tmp_path / "missing.toml")
    assert StateDir(tmp_path).registry.name == "registry.sqlite3"


def test_inventory_record_lines_roundtrip() -> None:
    from cjb.common.control.protocol import InventoryRecord

    d = Device("SN-9")
    rec = InventoryRecord.model_validate(json.loads(d.record("acme")))
    assert rec.factory_public_key == d.factory_public
