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
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from controlkit import Device, Gateway, gateway
from cryptography import x509

from cjb.common.control.protocol import EnrollResponse, ErrorBody
from cjb.gateway.control import api, enroll, statedir
from cjb.gateway.control.nonces import NonceStore, NonceVerdict
from cjb.gateway.control.ratelimit import RateLimiter
from cjb.gateway.control.registry import DeviceRow, TenantRow
from cjb.gateway.control.render import device_detail
from cjb.gateway.control.settings import SettingsError, load_text

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


# -- the operator's device view --------------------------------------------------------------


def test_device_detail_shows_the_overlay_address() -> None:
    device = DeviceRow("SN-1", "k" * 44, "acme", "cjb-appliance", "enrolled", None, None,
                       None, None, None, 0.0)  # fmt: skip
    tenant = TenantRow("acme", 4096, ipaddress.IPv6Address("fd63:6a62:77::100"), None, None,
                       None, 1400, [], 1, 0.0)  # fmt: skip
    text = device_detail(device, tenant, [], [], 0.0)
    assert "fd63:6a62:77::100" in text
    unallocated = device_detail(
        device,
        TenantRow("acme", None, None, None, None, None, 1400, [], 1, 0.0),
        [],
        [],
        0.0,
    )
    assert "overlay address    -" in unallocated


# -- settings bounds -------------------------------------------------------------------------


def test_wireguard_keepalive_bounded_at_ten_minutes() -> None:
    assert load_text("[wireguard]\nkeepalive_seconds = 600\n", Path("g.toml"))
    with pytest.raises(SettingsError, match="keepalive_seconds"):
        load_text("[wireguard]\nkeepalive_seconds = 601\n", Path("g.toml"))


# -- the CA certificate's serial -------------------------------------------------------------


def test_ca_serial_takes_63_random_bits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 5280 §4.1.2.2: positive and unpredictable; 8 random bytes give 63 bits."""
    monkeypatch.setattr(statedir.secrets, "token_bytes", lambda n: b"\xff" * n)
    layout = statedir.init_state_dir(tmp_path / "gw", ["localhost"], "gw.example:51820")
    ca = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
    assert ca.serial_number == (1 << 63) - 1


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


def test_enrollment_facts_are_immutable() -> None:
    fields = {f: "x" for f in enroll.EnrollClaim.__dataclass_fields__}
    claim = enroll.EnrollClaim(**fields)  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        claim.serial = "other"  # type: ignore[misc]
