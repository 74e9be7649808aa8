"""The control plane's trust boundary, unit level (sans-IO cores, no server): bounded device
numbers, control characters in catalog strings, enrollment refusals that look alike, nonce
quotas per source, rate limits per IPv6 /64, audit retention, operator credential hashing,
files created private whatever the umask. The same behaviour over real HTTPS, with observed
counts: tests/resilience/test_trust_boundary.py."""

from __future__ import annotations

import base64
import datetime as dt
import io
import ipaddress
import json
import os
import stat
import statistics
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from controlkit import Device
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from pydantic import TypeAdapter, ValidationError

from cjb.appliance.discovery.relay import DiscoveryRelay, RelayConfig
from cjb.appliance.discovery.ssdp import devices_for
from cjb.common.control.protocol import (
    MAX_HEARTBEAT_COUNTERS,
    MAX_WIRE_INT,
    CatalogService,
    Heartbeat,
)
from cjb.common.private_file import atomic_output, atomic_write
from cjb.common.validation import validation_problems
from cjb.gateway.control import enroll as enroll_mod
from cjb.gateway.control import operators, pki
from cjb.gateway.control.enroll import (
    UNIFORM_REFUSALS,
    DeviceFacts,
    EnrollClaim,
    Enroller,
    EnrollmentPolicy,
    LanClaim,
)
from cjb.gateway.control.errors import ControlError
from cjb.gateway.control.nonces import NonceStore, NonceVerdict
from cjb.gateway.control.ratelimit import RateLimiter, source_key
from cjb.gateway.control.registry import AuditLimits, Registry


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- heartbeat bounds ---------------------------------------------------------------------


def _hb(**over: object) -> dict[str, object]:
    return {"serial": "SN-1", "config_version": 1, "uptime_seconds": 5, "tunnel_up": True, **over}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("config_version", 10**30),
        ("config_version", -1),
        ("uptime_seconds", MAX_WIRE_INT + 1),
        ("last_handshake_age_seconds", 2**64),
        ("counters", {"x": 10**20}),
        ("counters", {"x": -5}),
        ("counters", {"bad name\n": 1}),
        ("counters", {f"c{i}": 1 for i in range(MAX_HEARTBEAT_COUNTERS + 1)}),
    ],
)
def test_heartbeat_numbers_are_bounded(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as exc:
        Heartbeat.model_validate(_hb(**{field: value}))
    assert validation_problems(exc.value)[0].startswith(field)


def test_heartbeat_at_the_bounds_is_fine() -> None:
    counters = {f"c{i}": MAX_WIRE_INT for i in range(MAX_HEARTBEAT_COUNTERS)}
    hb = Heartbeat.model_validate(
        _hb(uptime_seconds=MAX_WIRE_INT, last_handshake_age_seconds=0, counters=counters)
    )
    assert float(hb.uptime_seconds) == MAX_WIRE_INT  # exact in a float: /metrics can hold it


# -- catalog control characters -----------------------------------------------------------

_CATALOG = TypeAdapter(list[CatalogService])


@pytest.mark.parametrize(
    ("entry", "where"),
    [
        ({"instance": "Files\r\nX-Evil: 1"}, "catalog[0].instance"),
        ({"txt": {"path": "/\n"}}, "catalog[0].txt.path"),
        ({"txt": {"pa\x00th": "/"}}, "catalog[0].txt.pa\x00th (key)"),
        ({"upnp_device_type": "urn:x\r\nLOCATION: http://evil/"}, "catalog[0].upnp_device_type"),
        ({"upnp_description_path": "/d.xml\x7f"}, "catalog[0].upnp_description_path"),
        ({"instance": "tab\there"}, "catalog[0].instance"),
    ],
)
def test_catalog_refuses_control_characters_naming_the_field(
    entry: dict[str, object], where: str
) -> None:
    doc = [{"instance": "Files", "service_type": "_http._tcp", "port": 80, **entry}]
    with pytest.raises(ValidationError) as exc:
        _CATALOG.validate_python(doc)
    problems = validation_problems(exc.value, prefix="catalog")
    assert len(problems) == 1
    assert problems[0].startswith(f"{where}: contains the control character"), problems


def _smuggled() -> CatalogService:
    """What the gateway would never send: built without validation."""
    return CatalogService.model_construct(
        instance="Printer",
        service_type="_ipp._tcp",
        port=631,
        txt={},
        upnp_device_type="urn:schemas-upnp-org:device:Printer:1\r\nLOCATION: http://evil/",
        upnp_description_path="/d.xml",
    )


def test_appliance_guards_catalog_strings_at_the_point_of_use() -> None:
    good = CatalogService(
        instance="Media",
        service_type="_http._tcp",
        port=80,
        upnp_device_type="urn:schemas-upnp-org:device:MediaServer:1",
        upnp_description_path="/d.xml",
    )
    bad = _smuggled()
    assert bad.control_char_field() == "upnp_device_type"
    devices = devices_for("t1", ipaddress.IPv4Address("192.168.0.100"), [bad, good])
    assert [d.device_type for d in devices] == [good.upnp_device_type]
    relay = DiscoveryRelay(
        RelayConfig(
            tenant="t1",
            service_ipv4=ipaddress.IPv4Address("192.168.0.100"),
            lan_ifname="br-x",
            lan_address=ipaddress.IPv4Address("192.168.0.2"),
        ),
        [bad, good],
    )
    status = relay.status()
    assert status["gate"]["catalog-control-chars"] == 1
    assert status["ssdp_devices"] == 1


# -- enrollment refusals look alike ---------------------------------------------------------


@pytest.fixture(scope="module")
def enroller() -> Enroller:
    key = pki.new_ec_key()
    now = dt.datetime.now(dt.UTC)
    ca = pki.make_ca(key, "test CA", now, 1)
    return Enroller(EnrollmentPolicy(), key, x509.load_pem_x509_certificate(pki.cert_pem(ca)))


def _claim(dev: Device) -> EnrollClaim:
    return EnrollClaim(
        serial=dev.serial,
        factory_public_key=dev.factory_public,
        nonce="A" * 43,
        wireguard_public_key=dev.wg_public,
        csr_pem=dev.csr_pem(),
        lan=LanClaim(
            ipaddress.IPv4Network("192.168.0.0/24"),
            None,
            ipaddress.IPv4Address("192.168.0.9"),
            1500,
        ),
    )


def _refusal_cases(
    dev: Device,
) -> dict[str, tuple[EnrollClaim, bytes, str | None, DeviceFacts | None]]:
    body = dev.body("A" * 43)
    good = dev.sign(body)
    facts = DeviceFacts(dev.serial, dev.factory_public, "acme", "inventory", None)
    other = Device(dev.serial)
    return {
        "unknown-serial": (_claim(dev), body, good, None),
        "device-revoked": (
            _claim(dev), body, good,
            DeviceFacts(dev.serial, dev.factory_public, "acme", "revoked", None),
        ),
        "factory-key-mismatch": (_claim(other), body, other.sign(body), facts),
        "bad-signature": (_claim(dev), body, dev.sign(body + b"x"), facts),
        "signature-missing": (_claim(dev), body, None, facts),
    }  # fmt: skip


def test_every_refusal_verifies_a_signature(
    enroller: Enroller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unknown serial, revoked, other key, bad or missing signature: each runs one Ed25519
    verification (against a throw-away key for an unknown serial) and keeps its own reason
    for the audit log, which the API then answers alike (UNIFORM_REFUSALS)."""
    dev = Device("SN-1")
    calls: list[str] = []
    real = enroll_mod._signature_ok

    def counting(public_b64: str, body: bytes, signature_b64: str | None) -> bool:
        calls.append(public_b64)
        return real(public_b64, body, signature_b64)

    monkeypatch.setattr(enroll_mod, "_signature_ok", counting)
    for reason, (claim, body, sig, facts) in _refusal_cases(dev).items():
        calls.clear()
        with pytest.raises(ControlError) as exc:
            enroller.verify(claim, body, sig, facts)
        assert exc.value.code == reason
        assert reason in UNIFORM_REFUSALS
        assert len(calls) == 1, reason
    # The stand-in key is not the device's, and the same for every unknown serial.
    claim, body, sig, _ = _refusal_cases(dev)["unknown-serial"]
    with pytest.raises(ControlError):
        enroller.verify(claim, body, sig, None)
    assert calls[-1] != dev.factory_public


def test_refusal_timing_is_alike(enroller: Enroller) -> None:
    """Median cost per refusal kind, sans-IO: within a factor of 2 of each other (a refusal
    before the signature check was ~100x cheaper than one after it)."""
    dev = Device("SN-1")
    medians = {}
    for reason, (claim, body, sig, facts) in _refusal_cases(dev).items():
        took = []
        for _ in range(60):
            start = time.perf_counter()
            with pytest.raises(ControlError):
                enroller.verify(claim, body, sig, facts)
            took.append(time.perf_counter() - start)
        medians[reason] = statistics.median(took)
    assert max(medians.values()) < 2 * min(medians.values()), medians


# -- nonces per source ---------------------------------------------------------------------


def test_one_source_cannot_evict_another_sources_nonce() -> None:
    store = NonceStore(ttl=120, cap=1000, per_source=64)
    victim = store.issue(0.0, os.urandom(32), "2001:db8:1::/64")
    for i in range(20_000):
        store.issue(1.0 + i * 1e-4, os.urandom(32), "2001:db8:bad::/64")
    assert store.held_by("2001:db8:bad::/64") == 64
    assert store.evicted == 20_000 - 64 and store.evicted_other_source == 0
    assert store.consume(victim, 3.0) is NonceVerdict.OK


def test_full_store_evicts_from_the_biggest_and_most_active_holder() -> None:
    store = NonceStore(ttl=120, cap=100, per_source=10)
    victims = [store.issue(0.0, os.urandom(32), f"10.0.0.{k}") for k in range(5)]
    for i in range(2_000):  # 200 sources, 10 each: twenty times the store
        store.issue(1.0, os.urandom(32), f"2001:db8:{i % 200:x}::/64")
    assert len(store) <= 100
    assert all(store.consume(v, 2.0) is NonceVerdict.OK for v in victims)
    one = NonceStore(ttl=120, cap=4, per_source=1)
    kept = one.issue(0.0, os.urandom(32), "a")
    for _ in range(10):
        one.issue(1.0, os.urandom(32), "b")
    assert one.held_by("b") == 1 and one.consume(kept, 2.0) is NonceVerdict.OK


# -- rate limits per /64 ------------------------------------------------------------------


def test_source_key_groups_ipv6_by_64() -> None:
    assert source_key("2001:db8:1:2:aaaa::1") == source_key("2001:db8:1:2:ffff::9")
    assert source_key("2001:db8:1:2::1") != source_key("2001:db8:1:3::1")
    assert source_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert source_key("192.0.2.7") == "192.0.2.7" != source_key("192.0.2.8")
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_key("fe80::1%eth0") == "fe80::/64"
    assert source_key(None) == source_key("not an address") == "?"


def test_a_64_shares_one_bucket_and_memory_stays_bounded() -> None:
    rl = RateLimiter(rate=1.0, burst=10, max_clients=256)
    allowed = sum(rl.allow(source_key(f"2001:db8:7:7::{i:x}"), 0.0) for i in range(1000))
    assert allowed == 10
    assert rl.allow(source_key("2001:db8:7:8::1"), 0.0)  # the next /64 has its own
    for i in range(100_000):
        rl.allow(source_key(f"2001:db8:{i >> 16:x}:{i & 0xFFFF:x}::1"), 1.0)
    assert len(rl) == 256
    assert not rl.blocked("fresh", 1.0)


# -- audit retention ----------------------------------------------------------------------


def test_audit_log_keeps_max_rows_and_max_age(tmp_path: Path) -> None:
    now = [1000.0]
    reg = Registry.open(tmp_path / "r.sqlite3", lambda: now[0], AuditLimits(100, 3600.0))
    with reg:
        for i in range(250):
            reg.audit("enroll-refused", f"SN-{i}", "192.0.2.1", "unknown-serial")
        assert reg.audit_rows() == 100 and reg.audit_pruned() == 150
        # Counters read from the log do not go down when rows go.
        assert reg.enrollment_outcomes() == {"unknown-serial": 250}
        assert reg.audit_log(limit=1)[0].serial == "SN-249"  # the newest stay
        now[0] += 7200  # two hours later: everything before is past max_age
        reg.audit("enroll-refused", "SN-late", None, "unknown-serial")
        assert reg.audit_rows() == 1 and reg.audit_pruned() == 250
        assert reg.enrollment_outcomes() == {"unknown-serial": 251}


# -- operator credentials -----------------------------------------------------------------


def test_operator_tokens_are_salted_hashes_checked_by_name() -> None:
    a, b = operators.new_credential("alice"), operators.new_credential("bob")
    assert a.salt != b.salt and a.digest != b.digest
    assert a.token.split(".")[2].encode() not in a.digest
    v = operators.Verifier()
    assert v.verify(a.token, (a.salt, a.digest), 0.0)
    assert v.cached(a.token, 1.0) == "alice"
    assert v.cached(a.token, 1.0 + operators.CACHE_SECONDS + 1) is None
    assert not v.verify(a.token, (b.salt, b.digest), 0.0)  # another name's hash
    assert not v.verify(a.token, None, 0.0)  # unknown or revoked name
    assert not v.verify(a.token + "x", (a.salt, a.digest), 0.0)
    assert not v.verify("garbage", None, 0.0)
    with pytest.raises(ValueError, match="operator name"):
        operators.new_credential("Root Admin")


# -- files holding keys: private from creation, whatever the umask --------------------------


def test_atomic_write_is_private_under_umask_000(tmp_path: Path, umask_000: None) -> None:
    path = tmp_path / "key"
    atomic_write(path, b"secret")
    assert _mode(path) == 0o600 and path.read_bytes() == b"secret"
    atomic_write(path, b"again", 0o640)
    assert _mode(path) == 0o640
    with pytest.raises(FileExistsError):
        atomic_write(path, b"x", exclusive=True)

    def half_written() -> None:
        with atomic_output(tmp_path / "half") as f:
            f.write(b"half")
            raise RuntimeError

    with pytest.raises(RuntimeError):
        half_written()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key"]  # no temp file left


def test_personalised_tarball_is_private_under_umask_000(tmp_path: Path, umask_000: None) -> None:
    from cjb.appliance.image.personalise import personalise

    tarball = tmp_path / "root.tar"
    with tarfile.open(tarball, "w") as tar:
        info = tarfile.TarInfo("./etc/hostname")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"cjb\n"))
    os.chmod(tarball, 0o644)
    record = personalise(tarball, "SN-T1", "acme")
    assert _mode(tarball) == 0o600
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert any(n.endswith("factory-key.pem") or "factory" in n for n in names), names
    assert record.serial == "SN-T1"
    root = tmp_path / "rootdir"
    (root / "etc").mkdir(parents=True)
    personalise(root, "SN-T2", "acme")
    keys = [p for p in root.rglob("*") if p.is_file() and "key" in p.name]
    assert keys and all(_mode(p) == 0o600 for p in keys), keys


def test_appliance_keys_and_gateway_state_private_under_umask_000(
    tmp_path: Path, umask_000: None
) -> None:
    from cjb.appliance.keys import write_private
    from cjb.gateway.control.statedir import init_state_dir

    write_private(tmp_path / "a/wireguard.key", b"k")
    assert _mode(tmp_path / "a/wireguard.key") == 0o600
    layout = init_state_dir(tmp_path / "gw", ["localhost"], "x:1")
    for secret in (layout.ca_key, layout.server_key, layout.wg_private, layout.registry):
        assert _mode(secret) == 0o600, secret
    assert _mode(layout.desired) == 0o640
    assert json.loads(layout.desired.read_text()) == {"generation": 0, "tunnels": [], "version": 1}
    assert len(base64.b64decode(layout.wg_public_key())) == 32


def test_ed25519_dummy_key_is_a_real_key(enroller: Enroller) -> None:
    raw = base64.b64decode(enroller._dummy_key)
    ed25519.Ed25519PublicKey.from_public_bytes(raw)  # a malformed one would raise
