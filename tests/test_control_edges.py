"""Edges of the control plane that the API tests do not reach: the nonce store's memory of
expired and used nonces, the rate limiter's eviction order, a device whose state says
"not enrolled" while its certificate is still valid, the operator's device view, the
settings' bounds, the CA serial's randomness. Each pins one behaviour of gateway/control
(found by mutation testing, tools/mutation.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from controlkit import Device, Gateway, gateway
from cryptography import x509

from cjb.common.control.protocol import EnrollResponse, ErrorBody
from cjb.common.tunnel_mtu import MIN_WIREGUARD_MTU
from cjb.gateway.control import api, enroll, statedir
from cjb.gateway.control.errors import ControlError
from cjb.gateway.control.nonces import NonceStore, NonceVerdict
from cjb.gateway.control.ratelimit import RateLimiter
from cjb.gateway.control.registry import (
    Allocation,
    AuditRow,
    CertRow,
    DeviceRow,
    EnrollmentRecord,
    Registry,
    TenantRow,
)
from cjb.gateway.control.render import device_detail, device_table
from cjb.gateway.control.settings import (
    Settings,
    SettingsError,
    WireGuardSettings,
    load_text,
    render_template,
)

# -- nonces: a refusal says why for twice the TTL -------------------------------------------


def test_expired_nonce_still_named_expired_after_others_are_issued() -> None:
    store = NonceStore(ttl=60.0, cap=100)
    old = store.issue(0.0, b"\x01" * 32)
    store.issue(90.0, b"\x02" * 32)  # sweeps what is older than 2 x TTL only
    assert store.consume(old, 90.0) is NonceVerdict.EXPIRED


def test_used_nonce_still_named_replayed_after_others_are_issued() -> None:
    store = NonceStore(ttl=60.0, cap=100)
    nonce = store.issue(0.0, b"\x01" * 32)
    assert store.consume(nonce, 1.0) is NonceVerdict.OK
    store.issue(100.0, b"\x02" * 32)
    assert store.consume(nonce, 100.0) is NonceVerdict.REPLAYED
    store.issue(200.0, b"\x03" * 32)  # past 2 x TTL it is forgotten: memory stays bounded
    assert store.consume(nonce, 200.0) is NonceVerdict.UNKNOWN


# -- rate limiter: the least recently seen client is forgotten -------------------------------


def test_rate_limiter_forgets_the_least_recently_seen_client() -> None:
    limiter = RateLimiter(rate=0.0, burst=1, max_clients=2)  # no refill: tokens only drain
    assert limiter.allow("a", 0.0) and limiter.allow("b", 0.0)
    assert limiter.allow("c", 0.0)  # a third client: "a", seen longest ago, is forgotten
    assert len(limiter) == 2
    assert not limiter.allow("b", 0.0), "b was seen more recently than a: still remembered"
    assert limiter.allow("a", 0.0), "a was forgotten: a fresh burst"


# -- device endpoints: the device's own state is checked, not only its certificate ---------


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    with gateway(tmp_path) as g:
        yield g


def test_device_endpoint_refuses_a_device_no_longer_enrolled(gw: Gateway, tmp_path: Path) -> None:
    """Defence in depth: revoking revokes the certificates too, but a device whose registry
    state is not "enrolled" is refused even with a certificate that is still valid."""
    dev = Device("SN-EDGE")
    gw.ctx.registry.add_device(dev.serial, dev.factory_public, "acme", "cjb-appliance")
    r = gw.enroll(dev)
    assert r.status == 200, r.text
    cert = EnrollResponse.model_validate(r.body).device_certificate_pem
    client = dev.write_client_files(cert, tmp_path)
    assert gw.request("GET", "/v1/device/config", client=client).status == 200
    with sqlite3.connect(gw.layout.registry) as conn:
        conn.execute("UPDATE devices SET state = 'revoked' WHERE serial = ?", (dev.serial,))
    got = gw.request("GET", "/v1/device/config", client=client)
    assert got.status == 403, got.text
    assert ErrorBody.model_validate(got.body).error == "device-revoked"


# -- the operator's views (cjb gateway device list|show, the operator API) --------------------

NOW = 1_764_000_000.0
KEY = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefg="
ACME = TenantRow("acme", 4096, ipaddress.IPv6Address("fd63:6a62:77::100"),
                 ipaddress.IPv4Address("192.168.0.100"), "192.168.0.0/24", "192.168.0.1", 1400,
                 [], 3, NOW - 500)  # fmt: skip
FRESH = TenantRow("fresh", None, None, None, None, None, 1500, [], 1, NOW - 50)


def _device(serial: str, tenant: str | None, state: str, **over: object) -> DeviceRow:
    base: dict[str, object] = {
        "serial": serial, "factory_public_key": KEY, "tenant": tenant,
        "model": "cjb-appliance", "state": state, "wireguard_public_key": None,
        "enrolled_at": None, "last_seen": None, "last_peer": None, "heartbeat": None,
        "created_at": NOW - 1000, "current_cert": None,
    }  # fmt: skip
    return DeviceRow(**{**base, **over})  # type: ignore[arg-type]


def test_device_table_shows_allocation_only_for_enrolled_devices() -> None:
    devices = [
        _device("SN-1", "acme", "enrolled", last_seen=NOW - 12),
        _device("SN-2", "acme", "revoked"),
        _device("SN-3", None, "inventory"),
    ]
    text = device_table(devices, {"acme": ACME}, NOW)
    assert text.splitlines() == [
        "serial               tenant        state          vni  overlay                  last seen",
        "SN-1                 acme          enrolled      4096  fd63:6a62:77::100        12s ago",
        "SN-2                 acme          revoked          -  -                        -",
        "SN-3                 -             inventory        -  -                        -",
    ]
    assert "(no devices" in device_table([], {}, NOW)


def test_device_detail_lists_keys_allocation_heartbeat_certificates_audit() -> None:
    device = _device(
        "SN-1", "acme", "enrolled", wireguard_public_key=KEY[::-1], enrolled_at=NOW - 60,
        last_seen=NOW - 5, last_peer="203.0.113.7",
        heartbeat={"tunnel_up": True, "counters": {"rx": 5, "drops": 1}},
    )  # fmt: skip
    certs = [
        CertRow("ab" * 32, 7, "SN-1", NOW - 60, NOW + 86400, None),
        CertRow("cd" * 32, 6, "SN-1", NOW - 900, NOW - 10, None),
        CertRow("ef" * 32, 5, "SN-1", NOW - 990, NOW + 86400, NOW - 900),
    ]
    audit = [AuditRow(2, NOW - 60, "enrolled", "SN-1", "203.0.113.7", None, {})]
    text = device_detail(device, ACME, certs, audit, NOW)
    assert text.splitlines() == [
        "device SN-1",
        "  tenant             acme",
        "  model              cjb-appliance",
        "  state              enrolled",
        "  factory key        AbCdEfGhIj…",
        "  WireGuard key      =gfedcba98…",
        "  enrolled           2025-11-24 15:59:00Z (60s ago)",
        "  last seen          2025-11-24 15:59:55Z (5s ago)",
        "  last address       203.0.113.7",
        "  VNI                4096",
        "  overlay address    fd63:6a62:77::100",
        "  service IPv4       192.168.0.100",
        "  LAN                192.168.0.0/24 via 192.168.0.1, MTU 1400",
        "  config version     3",
        "  tunnel up          True",
        "    drops            1",
        "    rx               5",
        "  certificates",
        "    abababababababab…  until 2025-11-25  valid",
        "    cdcdcdcdcdcdcdcd…  until 2025-11-24  expired",
        "    efefefefefefefef…  until 2025-11-25  revoked",
        "  audit (newest first)",
        "    2025-11-24 15:59:00Z  enrolled                               203.0.113.7",
    ]


def test_device_detail_before_allocation() -> None:
    text = device_detail(_device("SN-9", "fresh", "inventory"), FRESH, [], [], NOW)
    assert "  VNI                - (allocated at enrollment)" in text
    assert "  overlay address    -" in text
    assert "  WireGuard key      -" in text
    assert "  enrolled           -" in text


def test_operator_api_documents() -> None:
    assert api.tenant_doc(ACME) == {
        "name": "acme", "vni": 4096, "overlay_address": "fd63:6a62:77::100",
        "service_ipv4": "192.168.0.100", "lan_prefix": "192.168.0.0/24",
        "lan_router": "192.168.0.1", "lan_mtu": 1400, "catalog": [], "config_version": 3,
    }  # fmt: skip
    fresh = api.tenant_doc(FRESH)
    assert (fresh["overlay_address"], fresh["service_ipv4"], fresh["vni"]) == (None, None, None)


def test_only_the_operator_refusal_asks_for_a_bearer_token() -> None:
    # RFC 6750 §3: a 401 for a missing/wrong bearer token names the scheme.
    assert api._error(401, "unauthorized", "m").headers["WWW-Authenticate"] == "Bearer"
    assert "WWW-Authenticate" not in api._error(401, "client-certificate-required", "m").headers
    assert "WWW-Authenticate" not in api._error(403, "unauthorized", "m").headers


# -- settings bounds -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "low", "high"),
    [
        ("tenants", "first_vni", 1, 0xFFFFFF),  # RFC 7348 §5: a 24-bit VNI
        ("wireguard", "keepalive_seconds", 0, 600),
        ("wireguard", "mtu", MIN_WIREGUARD_MTU, 9000),  # below: no 1280-byte LAN packet fits
        ("enrollment", "certificate_days", 1, 825),
        ("enrollment", "heartbeat_seconds", 5, 3600),
        ("api", "port", 1, 65535),
        ("wireguard", "listen_port", 1, 65535),
        ("tenants", "vxlan_port", 1, 65535),
    ],
)
def test_settings_bounds(section: str, key: str, low: int, high: int) -> None:
    for good in (low, high):
        settings = load_text(f"[{section}]\n{key} = {good}\n", Path("g.toml"))
        assert getattr(getattr(settings, section), key) == good
    for bad in (low - 1, high + 1):
        with pytest.raises(SettingsError, match=f"{section}.{key}|{key}"):
            load_text(f"[{section}]\n{key} = {bad}\n", Path("g.toml"))


def test_the_written_settings_file_holds_exactly_the_defaults() -> None:
    """`cjb gateway init` writes the template, which says every value in it is the default."""
    text = render_template("::", 8443, WireGuardSettings().endpoint)
    assert load_text(text, Path("g.toml")) == Settings()


# -- the CA certificate's serial -------------------------------------------------------------


def test_ca_serial_takes_63_random_bits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 5280 §4.1.2.2: positive and unpredictable; 8 random bytes give 63 bits."""
    monkeypatch.setattr(statedir.secrets, "token_bytes", lambda n: b"\xff" * n)
    # A state dir whose parents do not exist yet is created with them.
    layout = statedir.init_state_dir(tmp_path / "srv" / "cjb" / "gw", ["localhost"], "gw:51820")
    ca = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
    assert ca.serial_number == (1 << 63) - 1
    # RFC 5280 §4.2.1.3: a CA key signs certificates and CRLs, nothing else.
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    used = {
        name
        for name in ("digital_signature", "content_commitment", "key_encipherment",
                     "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign")
        if getattr(usage.value, name)
    }  # fmt: skip
    assert used == {"key_cert_sign", "crl_sign"}


# -- every HTTP error the framework raises comes back as an ErrorBody ------------------------


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (web.HTTPBadRequest(), "bad-request"),
        (web.HTTPNotFound(), "not-found"),
        (web.HTTPMethodNotAllowed("PUT", ["GET"]), "method-not-allowed"),
    ],
)
def test_framework_http_errors_become_error_bodies(exc: web.HTTPException, code: str) -> None:
    async def handler(_request: web.Request) -> web.StreamResponse:
        raise exc

    async def call() -> web.StreamResponse:
        return await api._errors(make_mocked_request("PUT", "/v1/x"), handler)

    response = asyncio.run(call())
    assert isinstance(response, web.Response) and isinstance(response.body, bytes)
    assert response.status == exc.status
    body = ErrorBody.model_validate_json(response.body)
    assert body.error == code
    assert "PUT /v1/x" in body.message


def test_a_bug_in_a_handler_is_a_500_error_body_without_details() -> None:
    async def handler(_request: web.Request) -> web.StreamResponse:
        raise RuntimeError("secret detail")

    async def call() -> web.StreamResponse:
        return await api._errors(make_mocked_request("GET", "/v1/x"), handler)

    response = asyncio.run(call())
    assert isinstance(response, web.Response) and isinstance(response.body, bytes)
    assert response.status == 500
    body = ErrorBody.model_validate_json(response.body)
    assert body.error == "internal" and "secret detail" not in body.message


def test_enrollment_values_are_immutable() -> None:
    """The claim, the registry's facts and the decision are values: a rule cannot edit
    what another rule reads."""
    kinds = [
        k for k in vars(enroll).values() if dataclasses.is_dataclass(k) and isinstance(k, type)
    ]
    assert {"EnrollClaim", "DeviceFacts"} <= {k.__name__ for k in kinds}
    for kind in kinds:
        value = kind(**{f.name: "x" for f in dataclasses.fields(kind)})
        field = dataclasses.fields(kind)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, field, "other")


def test_catalog_for_an_unknown_tenant_is_not_found(gw: Gateway) -> None:
    r = gw.operator("PUT", "/v1/operator/tenants/nope/catalog", data=b"[]")
    assert r.status == 404, r.text
    assert ErrorBody.model_validate(r.body).error == "unknown-tenant"
    with pytest.raises(ControlError) as refused:
        gw.ctx.registry.set_catalog("nope", [])
    assert (refused.value.status, refused.value.code) == (404, "unknown-tenant")


def test_vni_allocation_stops_at_24_bits(tmp_path: Path) -> None:
    """RFC 7348 §5: 0xFFFFFF is the last VNI; past it, allocation refuses (507) rather
    than hand out a VNI the wire cannot carry."""
    plan = Allocation(
        0xFFFFFF,
        ipaddress.IPv6Network("fd63:6a62:77::/64"),
        ipaddress.IPv6Address("fd63:6a62:77::100"),
    )
    with Registry.open(tmp_path / "registry.sqlite") as reg:
        for n in (1, 2):
            reg.add_device(f"SN-{n}", Device(f"SN-{n}").factory_public, f"t{n}", "cjb-appliance")
        with reg._tx() as c:
            Registry._allocate(c, "t1", plan)
        t1 = reg.tenant("t1")
        assert t1 is not None and t1.vni == 0xFFFFFF
        with pytest.raises(ControlError) as refused, reg._tx() as c:
            Registry._allocate(c, "t2", plan)
        assert (refused.value.status, refused.value.code) == (507, "allocation-exhausted")


def test_nonce_exactly_twice_the_ttl_old_is_still_remembered() -> None:
    store = NonceStore(ttl=60.0, cap=100)
    old = store.issue(0.0, b"\x01" * 32)
    store.issue(120.0, b"\x02" * 32)
    assert store.consume(old, 120.0) is NonceVerdict.EXPIRED


def test_rate_limiter_remembers_4096_clients_by_default() -> None:
    limiter = RateLimiter(rate=0.0, burst=1)
    for n in range(4097):
        limiter.allow(f"10.0.{n // 256}.{n % 256}", 0.0)
    assert len(limiter) == 4096


def test_ages_never_negative_and_start_at_zero() -> None:
    # A heartbeat stamped by a clock slightly ahead shows as just now, not "-3s ago".
    for seen in (NOW, NOW + 3):
        text = device_detail(_device("SN-1", None, "inventory", last_seen=seen), None, [], [], NOW)
        assert "(0s ago)" in text
        assert "0s ago" in device_table(
            [_device("SN-1", None, "inventory", last_seen=seen)], {}, NOW
        )


# -- the registry's own checks, under the write lock (what a race past the API meets) --------

PLAN = Allocation(100, ipaddress.IPv6Network("fd63:6a62:77::/64"),
                  ipaddress.IPv6Address("fd63:6a62:77::100"))  # fmt: skip


def _record(serial: str, factory: str, wg: str, n: int = 1) -> EnrollmentRecord:
    return EnrollmentRecord(
        serial, factory, wg, ipaddress.IPv4Address("192.168.0.100"), "192.168.0.0/24",
        "192.168.0.1", 1500, "{}", f"{n:064x}", n, NOW + 86400, "203.0.113.7",
    )  # fmt: skip


def _refused_by(call: Callable[[], object], status: int, code: str) -> None:
    with pytest.raises(ControlError) as refused:
        call()
    assert (refused.value.status, refused.value.code) == (status, code)


def test_registry_rechecks_every_precondition_of_an_enrollment(tmp_path: Path) -> None:
    a, b = Device("SN-A"), Device("SN-B")
    with Registry.open(tmp_path / "registry.sqlite") as reg:
        reg.add_device(a.serial, a.factory_public, "acme", "cjb-appliance")
        reg.add_device(b.serial, b.factory_public, "beta", "cjb-appliance")

        def enroll_(serial: str, factory: str, wg: str, n: int = 1) -> object:
            return reg.commit_enrollment(_record(serial, factory, wg, n), PLAN)

        _refused_by(lambda: enroll_("SN-X", a.factory_public, "w" * 44), 403, "unknown-serial")
        _refused_by(
            lambda: enroll_("SN-A", b.factory_public, "w" * 44), 403, "factory-key-mismatch"
        )
        enroll_("SN-A", a.factory_public, "w" * 44, 1)
        # The same serial again with another WireGuard key: a clone (or a reset unit).
        _refused_by(lambda: enroll_("SN-A", a.factory_public, "v" * 44, 2), 409, "clone-suspected")
        # Another device presenting a WireGuard key already bound elsewhere.
        _refused_by(
            lambda: enroll_("SN-B", b.factory_public, "w" * 44, 3), 409, "wireguard-key-in-use"
        )
        _refused_by(lambda: reg.reinstate("SN-A", "test"), 409, "not-revoked")
        reg.revoke("SN-A", "stolen", "test")
        _refused_by(lambda: enroll_("SN-A", a.factory_public, "w" * 44, 4), 403, "device-revoked")


def test_certificate_valid_through_its_not_after_second(gw: Gateway, tmp_path: Path) -> None:
    """RFC 5280 §4.1.2.5: the validity period includes notAfter itself."""
    dev = Device("SN-EDGE")
    gw.ctx.registry.add_device(dev.serial, dev.factory_public, "acme", "cjb-appliance")
    r = gw.enroll(dev)
    assert r.status == 200, r.text
    client = dev.write_client_files(EnrollResponse.model_validate(r.body).device_certificate_pem,
                                    tmp_path)  # fmt: skip
    (cert,) = gw.ctx.registry.certificates(dev.serial)
    gw.clock.frozen, gw.clock.offset = cert.not_after, 0.0
    assert gw.request("GET", "/v1/device/config", client=client).status == 200
    gw.clock.frozen = cert.not_after + 1
    got = gw.request("GET", "/v1/device/config", client=client)
    assert got.status == 403 and ErrorBody.model_validate(got.body).error == "certificate-expired"


def test_metrics_report_a_tunnel_down(gw: Gateway) -> None:
    dev = Device("SN-EDGE")
    gw.ctx.registry.add_device(dev.serial, dev.factory_public, "acme", "cjb-appliance")
    assert gw.enroll(dev).status == 200
    gw.ctx.registry.record_heartbeat(dev.serial, "203.0.113.7", {"tunnel_up": False})
    text = gw.operator("GET", "/metrics").text
    assert 'cjb_tenant_tunnel_up{serial="SN-EDGE",tenant="acme"} 0.0' in text
    gw.ctx.registry.record_heartbeat(dev.serial, "203.0.113.7", {"tunnel_up": True})
    text = gw.operator("GET", "/metrics").text
    assert 'cjb_tenant_tunnel_up{serial="SN-EDGE",tenant="acme"} 1.0' in text


@pytest.mark.parametrize(
    ("key", "low"), [("nonce_burst", 1), ("max_outstanding_nonces", 16), ("enroll_burst", 1)]
)
def test_api_settings_lower_bounds(key: str, low: int) -> None:
    assert getattr(load_text(f"[api]\n{key} = {low}\n", Path("g.toml")).api, key) == low
    with pytest.raises(SettingsError, match=key):
        load_text(f"[api]\n{key} = {low - 1}\n", Path("g.toml"))


def test_state_dir_may_exist_empty_and_its_key_folders_are_private(tmp_path: Path) -> None:
    """An empty folder made beforehand (e.g. by tmpfiles.d) is used as is; the folders holding
    keys are 0700 whatever the umask lets through (docs/operations.md: api/, dataplane/)."""
    root = tmp_path / "gw"
    root.mkdir(mode=0o755)
    statedir.init_state_dir(root, ["localhost"], "gw:51820")
    layout = statedir.StateDir(root)
    for private in (layout.api_dir, layout.dataplane_dir, layout.ca_key.parent,
                    layout.server_key.parent, layout.wg_private.parent):  # fmt: skip
        assert stat.S_IMODE(private.stat().st_mode) == 0o700, private
