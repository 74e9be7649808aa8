"""The control plane's HTTPS API, for real: aiohttp over TLS on 127.0.0.1, SQLite in tmp dirs,
device keys from `cryptography`. Every refusal must come back as a 4xx ErrorBody naming the
reason, and leave the registry (all but the audit log) exactly as it was."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import logging
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest
from controlkit import Clock, Device, Gateway, Reply, gateway, snapshot
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from cjb.common.control.protocol import (
    MAX_REQUEST_BODY,
    NONCE_TTL_SECONDS,
    SIGNATURE_HEADER,
    DeviceConfig,
    EnrollResponse,
    ErrorBody,
)
from cjb.gateway.control import logs, pki
from cjb.gateway.control.enroll import REFUSED_CODE, REFUSED_MESSAGE
from cjb.gateway.control.statedir import init_state_dir


@pytest.fixture
def gw(tmp_path: Path):
    with gateway(tmp_path) as g:
        yield g


def _add(gw: Gateway, dev: Device, tenant: str = "acme") -> None:
    gw.ctx.registry.add_device(dev.serial, dev.factory_public, tenant, "cjb-appliance")


def _refused(gw: Gateway, reply, status: int, code: str) -> None:
    assert reply.status == status, reply.text
    err = ErrorBody.model_validate(reply.body)
    assert err.error == code
    assert err.message


def _refused_alike(gw: Gateway, reply, serial: str, reason: str) -> None:
    """The one wire answer for every inventory-revealing refusal; the audit keeps `reason`."""
    assert reply.status == 403, reply.text
    assert reply.body == {"error": REFUSED_CODE, "message": REFUSED_MESSAGE}
    assert gw.ctx.registry.audit_log(serial)[0].reason == reason


def _enroll_ok(gw: Gateway, dev: Device) -> EnrollResponse:
    r = gw.enroll(dev)
    assert r.status == 200, r.text
    return EnrollResponse.model_validate(r.body)


# -- happy path --------------------------------------------------------------------------


def test_enroll_then_mtls_config_and_heartbeat(gw: Gateway, tmp_path: Path) -> None:
    dev = Device("SN-0001")
    _add(gw, dev)
    resp = _enroll_ok(gw, dev)
    cfg = resp.config
    assert cfg.tenant == "acme"
    assert cfg.tunnel.vni == 100
    assert str(cfg.tunnel.overlay_address) == "fd63:6a62:77::100"
    assert str(cfg.tunnel.gateway_overlay_address) == "fd63:6a62:77::1"
    assert cfg.tunnel.gateway_wireguard_public_key == gw.layout.wg_public_key()
    assert cfg.tunnel.gateway_endpoint == "198.51.100.1:51820"
    assert str(cfg.service_ipv4) == "192.168.0.100"
    assert resp.ca_certificate_pem == gw.layout.ca_cert.read_text()

    client = dev.write_client_files(resp.device_certificate_pem, tmp_path)
    got = gw.request("GET", "/v1/device/config", client=client)
    assert got.status == 200, got.text
    assert DeviceConfig.model_validate(got.body) == cfg

    hb = {
        "serial": dev.serial,
        "config_version": cfg.config_version,
        "uptime_seconds": 12,
        "tunnel_up": True,
        "last_handshake_age_seconds": 5,
        "counters": {"frames_out": 7},
    }
    r = gw.request("POST", "/v1/device/heartbeat", data=json.dumps(hb).encode(), client=client)
    assert r.status == 200, r.text
    assert r.body == {"config_version": cfg.config_version}
    text = gw.operator("GET", "/metrics").text
    assert 'cjb_tenant_tunnel_up{serial="SN-0001",tenant="acme"} 1.0' in text
    assert 'cjb_tenant_last_handshake_age_seconds{serial="SN-0001",tenant="acme"} 5' in text
    row = gw.ctx.registry.device(dev.serial)
    assert row is not None and row.state == "enrolled" and row.last_seen is not None
    assert row.heartbeat is not None and row.heartbeat["counters"] == {"frames_out": 7}

    # A heartbeat naming another serial than the certificate is refused.
    r = gw.request(
        "POST",
        "/v1/device/heartbeat",
        data=json.dumps({**hb, "serial": "SN-OTHER"}).encode(),
        client=client,
    )
    _refused(gw, r, 403, "serial-mismatch")

    # A catalog change bumps config_version; the heartbeat answer tells the device.
    catalog = [{"instance": "Files", "service_type": "_http._tcp", "port": 80}]
    r = gw.operator("PUT", "/v1/operator/tenants/acme/catalog", data=json.dumps(catalog).encode())
    assert r.status == 200, r.text
    r = gw.request("POST", "/v1/device/heartbeat", data=json.dumps(hb).encode(), client=client)
    assert r.body["config_version"] == cfg.config_version + 1
    got = DeviceConfig.model_validate(gw.request("GET", "/v1/device/config", client=client).body)
    assert [c.instance for c in got.catalog] == ["Files"]


def test_reenroll_same_device_is_idempotent(gw: Gateway) -> None:
    dev, other = Device("SN-A"), Device("SN-B")
    _add(gw, dev, "acme")
    _add(gw, other, "beta")
    first = _enroll_ok(gw, dev)
    second_tenant = _enroll_ok(gw, other)
    again = _enroll_ok(gw, dev)
    assert again.config.tunnel == first.config.tunnel
    assert again.config.config_version == first.config.config_version
    assert second_tenant.config.tunnel.vni == 101
    assert str(second_tenant.config.tunnel.overlay_address) == "fd63:6a62:77::101"
    assert len(gw.ctx.registry.certificates(dev.serial)) == 2
    assert [t.serial for t in gw.ctx.registry.desired_tunnels()] == ["SN-A", "SN-B"]


# -- refusals: 4xx with a reason, registry unchanged --------------------------------------


def test_unknown_serial(gw: Gateway) -> None:
    before = snapshot(gw.layout)
    _refused_alike(gw, gw.enroll(Device("SN-NOPE")), "SN-NOPE", "unknown-serial")
    assert snapshot(gw.layout) == before


def test_wrong_factory_key(gw: Gateway) -> None:
    dev = Device("SN-1")
    _add(gw, dev)
    impostor = Device("SN-1")  # same serial, its own factory key
    before = snapshot(gw.layout)
    _refused_alike(gw, gw.enroll(impostor), "SN-1", "factory-key-mismatch")
    assert snapshot(gw.layout) == before


def test_bad_signature(gw: Gateway) -> None:
    dev = Device("SN-1")
    _add(gw, dev)
    before = snapshot(gw.layout)
    body = dev.body(gw.nonce())
    cases = {
        "other key": dev.sign(body, ed25519.Ed25519PrivateKey.generate()),
        "other body": dev.sign(body + b" "),
        "garbage": "not base64!",
    }
    for sig in cases.values():
        r = gw.request("POST", "/v1/enroll", data=body, headers={SIGNATURE_HEADER: sig})
        _refused_alike(gw, r, "SN-1", "bad-signature")
    _refused_alike(gw, gw.request("POST", "/v1/enroll", data=body), "SN-1", "signature-missing")
    assert snapshot(gw.layout) == before
    # The nonce was not spent by the failed attempts: the genuine request still works.
    r = gw.request("POST", "/v1/enroll", data=body, headers={SIGNATURE_HEADER: dev.sign(body)})
    assert r.status == 200, r.text


def test_replayed_nonce(gw: Gateway) -> None:
    dev = Device("SN-1")
    _add(gw, dev)
    body = dev.body(gw.nonce())
    headers = {SIGNATURE_HEADER: dev.sign(body)}
    assert gw.request("POST", "/v1/enroll", data=body, headers=headers).status == 200
    before = snapshot(gw.layout)
    _refused(
        gw, gw.request("POST", "/v1/enroll", data=body, headers=headers), 409, "nonce-replayed"
    )
    assert snapshot(gw.layout) == before


def test_expired_and_unknown_nonce(gw: Gateway) -> None:
    dev = Device("SN-1")
    _add(gw, dev)
    nonce = gw.nonce()
    gw.clock.offset += NONCE_TTL_SECONDS + 1
    before = snapshot(gw.layout)
    _refused(gw, gw.enroll(dev, nonce), 401, "nonce-expired")
    _refused(gw, gw.enroll(dev, "A" * 43), 401, "nonce-unknown")
    assert snapshot(gw.layout) == before


def test_clone_same_serial_other_unit(gw: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    dev = Device("SN-1")
    _add(gw, dev)
    _enroll_ok(gw, dev)
    # A copy of the flash: same serial and factory key, but it generated its own WireGuard key.
    clone = Device("SN-1", factory_key=dev.factory_key)
    before = snapshot(gw.layout)
    with caplog.at_level(logging.WARNING, logger="cjb.gateway.control"):
        _refused(gw, gw.enroll(clone), 409, "clone-suspected")
    assert snapshot(gw.layout) == before
    assert gw.ctx.registry.audit_log("SN-1")[0].event == "clone-alert"
    assert any("ALERT" in r.getMessage() for r in caplog.records)


def test_revoked_device_refused_everywhere(gw: Gateway, tmp_path: Path) -> None:
    dev = Device("SN-1")
    _add(gw, dev)
    resp = _enroll_ok(gw, dev)
    client = dev.write_client_files(resp.device_certificate_pem, tmp_path)
    r = gw.operator("POST", "/v1/operator/devices/SN-1/revoke", data=b'{"reason": "stolen"}')
    assert r.status == 200 and r.body["state"] == "revoked"
    assert gw.ctx.registry.desired_tunnels() == []
    _refused(gw, gw.request("GET", "/v1/device/config", client=client), 403, "certificate-revoked")
    before = snapshot(gw.layout)
    _refused_alike(gw, gw.enroll(dev), "SN-1", "device-revoked")
    assert snapshot(gw.layout) == before


def test_certificate_from_another_ca(gw: Gateway, tmp_path: Path) -> None:
    """A client certificate that does not chain to our CA fails the TLS handshake itself, so
    no handler runs and nothing can reach the registry (Python's ssl offers no way to accept
    an unverified certificate and refuse it later with a 4xx; this is the stricter answer)."""
    other = init_state_dir(tmp_path / "other", ["127.0.0.1"], "x:1")
    dev = Device("SN-1")
    _add(gw, dev)
    foreign = pki.issue_device_cert(
        pki.load_key(other.ca_key.read_bytes()),
        x509.load_pem_x509_certificate(other.ca_cert.read_bytes()),
        "SN-1",
        dev.tls_key.public_key(),
        dt.datetime.now(dt.UTC),
        dt.timedelta(days=1),
        42,
    )
    client = dev.write_client_files(foreign.pem, tmp_path)
    before = snapshot(gw.layout)
    with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
        gw.request("GET", "/v1/device/config", client=client)
    # With TLS 1.2 the server checks the client certificate inside the handshake: it is the
    # handshake that fails, not an HTTP exchange.
    ctx = gw.ssl(client)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", gw.port), timeout=10) as raw,
        pytest.raises(ssl.SSLError),
    ):
        ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    assert snapshot(gw.layout) == before
    # Without any certificate: a clear 401 from the app; the server is fine.
    _refused(gw, gw.request("GET", "/v1/device/config"), 401, "client-certificate-required")


def test_device_certificate_unknown_or_expired(gw: Gateway, tmp_path: Path) -> None:
    dev = Device("SN-1")
    _add(gw, dev)
    resp = _enroll_ok(gw, dev)
    # Signed by our CA but never recorded as issued (e.g. a CA key misuse): refused.
    stray = pki.issue_device_cert(
        pki.load_key(gw.layout.ca_key.read_bytes()),
        x509.load_pem_x509_certificate(gw.layout.ca_cert.read_bytes()),
        "SN-1",
        dev.tls_key.public_key(),
        dt.datetime.now(dt.UTC),
        dt.timedelta(days=1),
        7,
    )
    (tmp_path / "stray").mkdir()
    client = dev.write_client_files(stray.pem, tmp_path / "stray")
    _refused(gw, gw.request("GET", "/v1/device/config", client=client), 403, "unknown-certificate")
    # The issued one, 31 days later by the gateway's (injected) clock: expired.
    client = dev.write_client_files(resp.device_certificate_pem, tmp_path)
    assert gw.request("GET", "/v1/device/config", client=client).status == 200
    gw.clock.offset += 31 * 86400
    _refused(gw, gw.request("GET", "/v1/device/config", client=client), 403, "certificate-expired")


def test_oversized_and_malformed_bodies(gw: Gateway) -> None:
    dev = Device("SN-1")
    _add(gw, dev)
    before = snapshot(gw.layout)
    big = dev.body(gw.nonce(), csr_pem="x" * 10) + b" " * MAX_REQUEST_BODY
    r = gw.request("POST", "/v1/enroll", data=big, headers={SIGNATURE_HEADER: dev.sign(big)})
    _refused(gw, r, 413, "body-too-large")

    async def chunked() -> int:  # no Content-Length: aiohttp's own limit must still hold
        async def gen():
            for _ in range(MAX_REQUEST_BODY // 1024 + 2):
                yield b" " * 1024

        async with (
            aiohttp.ClientSession() as s,
            s.post(gw.url + "/v1/enroll", data=gen(), ssl=gw.ssl()) as resp,
        ):
            assert (await resp.json())["error"] == "body-too-large"
            return resp.status

    assert asyncio.run(chunked()) == 413
    _refused(gw, gw.request("POST", "/v1/enroll", data=b"{not json"), 400, "bad-request")
    r = gw.request("POST", "/v1/enroll", data=b'{"serial": "x"}')
    _refused(gw, r, 400, "bad-request")
    assert "nonce" in r.body["message"]
    _refused(gw, gw.request("GET", "/v1/nope"), 404, "not-found")
    _refused(gw, gw.request("GET", "/v1/enroll"), 405, "method-not-allowed")
    # A CSR with the wrong CN, and one with a non-P-256 key.
    n = gw.nonce()
    body = dev.body(n, csr_pem=dev.csr_pem(cn="SN-OTHER"))
    r = gw.request("POST", "/v1/enroll", data=body, headers={SIGNATURE_HEADER: dev.sign(body)})
    _refused(gw, r, 400, "bad-csr")
    p384 = ec.generate_private_key(ec.SECP384R1())
    body = dev.body(gw.nonce(), csr_pem=dev.csr_pem(key=p384))
    r = gw.request("POST", "/v1/enroll", data=body, headers={SIGNATURE_HEADER: dev.sign(body)})
    _refused(gw, r, 400, "bad-csr")
    assert snapshot(gw.layout) == before


# -- concurrency ---------------------------------------------------------------------------


def test_one_time_nonce_under_concurrency(gw: Gateway) -> None:
    devices = [Device(f"SN-{i:02d}") for i in range(20)]
    for i, d in enumerate(devices):
        _add(gw, d, f"t{i}")
    nonce = gw.nonce()

    async def storm() -> list[int]:
        async with aiohttp.ClientSession() as s:
            tasks = []
            for d in devices:
                body = d.body(nonce)
                tasks.append(
                    gw.arequest(
                        s, "POST", "/v1/enroll", data=body, headers={SIGNATURE_HEADER: d.sign(body)}
                    )
                )
            return [r.status for r in await asyncio.gather(*tasks)]

    statuses = asyncio.run(storm())
    assert statuses.count(200) == 1, statuses
    assert statuses.count(409) == 19, statuses
    assert sum(d.state == "enrolled" for d in gw.ctx.registry.devices()) == 1


def test_concurrent_enrollments_allocate_unique(gw: Gateway) -> None:
    devices = [Device(f"SN-{i:02d}") for i in range(12)]
    for i, d in enumerate(devices):
        _add(gw, d, f"t{i}")
    nonces = [gw.nonce() for _ in devices]

    async def storm() -> list[int]:
        async with aiohttp.ClientSession() as s:
            tasks = []
            for d, n in zip(devices, nonces, strict=True):
                body = d.body(n)
                tasks.append(
                    gw.arequest(
                        s, "POST", "/v1/enroll", data=body, headers={SIGNATURE_HEADER: d.sign(body)}
                    )
                )
            return [r.status for r in await asyncio.gather(*tasks)]

    assert asyncio.run(storm()) == [200] * 12
    tunnels = gw.ctx.registry.desired_tunnels()
    assert sorted(t.vni for t in tunnels) == list(range(100, 112))
    assert len({t.overlay_address for t in tunnels}) == 12


def test_clone_racing_the_original(gw: Gateway) -> None:
    """Original and clone enroll at the same moment, each with its own fresh nonce: the
    registry binds exactly one of them; the other is refused as a clone and audited."""
    original = Device("SN-1")
    _add(gw, original)
    clone = Device("SN-1", factory_key=original.factory_key)
    for _ in range(5):
        pair = [(d, gw.nonce()) for d in (original, clone)]

        async def race(pair: list[tuple[Device, str]] = pair) -> list[Reply]:
            async with aiohttp.ClientSession() as s:
                tasks = []
                for d, n in pair:
                    body = d.body(n)
                    tasks.append(
                        gw.arequest(
                            s,
                            "POST",
                            "/v1/enroll",
                            data=body,
                            headers={SIGNATURE_HEADER: d.sign(body)},
                        )
                    )
                return list(await asyncio.gather(*tasks))

        replies = asyncio.run(race())
        assert sorted(r.status for r in replies) == [200, 409], [r.text for r in replies]
        winner = next(d for (d, _), r in zip(pair, replies, strict=True) if r.status == 200)
        assert gw.ctx.registry.device("SN-1").wireguard_public_key == winner.wg_public
        loser = next(r for r in replies if r.status == 409)
        assert loser.body["error"] == "clone-suspected"
        gw.ctx.registry.revoke("SN-1", "test round", "test")  # next round starts clean
        gw.ctx.registry.reinstate("SN-1", "test")
    events = [a.event for a in gw.ctx.registry.audit_log("SN-1", 100)]
    assert events.count("clone-alert") == 5 and events.count("enroll-ok") == 5


def test_nonce_flood_from_many_addresses_stays_bounded(tmp_path: Path) -> None:
    """30 source addresses (127.0.0.0/8) each take their full burst: the store holds at most
    its cap, forgets the oldest, and says so in /metrics."""
    layout = init_state_dir(tmp_path / "gw", ["127.0.0.1"], "x:1")
    text = layout.settings.read_text().replace(
        "max_outstanding_nonces = 10000", "max_outstanding_nonces = 64"
    )
    layout.settings.write_text(text)
    gw = Gateway(layout, Clock())
    try:
        gw.clock.freeze()

        async def flood() -> list[int]:
            statuses = []
            for i in range(30):
                conn = aiohttp.TCPConnector(local_addr=(f"127.0.0.{i + 2}", 0))
                async with aiohttp.ClientSession(connector=conn) as s:
                    for _ in range(12):  # burst 10, then refused
                        statuses.append((await gw.arequest(s, "POST", "/v1/enroll/nonce")).status)
            return statuses

        statuses = asyncio.run(flood())
        assert statuses.count(200) == 300 and statuses.count(429) == 60
        assert len(gw.ctx.nonces) <= 64
        metrics_text = gw.operator("GET", "/metrics").text
        assert "cjb_nonces_evicted_total 236.0" in metrics_text
        assert "cjb_nonce_requests_rate_limited_total 60.0" in metrics_text
    finally:
        gw.close()


def test_nonce_rate_limit_per_ip(gw: Gateway) -> None:
    gw.clock.freeze()

    async def burst() -> list[int]:
        async with aiohttp.ClientSession() as s:
            return [(await gw.arequest(s, "POST", "/v1/enroll/nonce")).status for _ in range(15)]

    statuses = asyncio.run(burst())
    assert statuses == [200] * 10 + [429] * 5  # the configured burst, then refused
    _refused(gw, gw.request("POST", "/v1/enroll/nonce"), 429, "rate-limited")
    gw.clock.offset += 10  # tokens refill with (injected) time
    assert gw.request("POST", "/v1/enroll/nonce").status == 200


# -- operator API, metrics, logs, curl -------------------------------------------------------


def test_enroll_attempts_rate_limited_per_ip(gw: Gateway) -> None:
    """Every refusal is audited: a flood of bogus enrollments must not grow the log unbounded."""
    body = Device("SN-bogus").body("A" * 43)
    gw.clock.freeze()  # no refill during the flood, however slow this machine is

    async def flood() -> list[int]:
        async with aiohttp.ClientSession() as s:
            return [
                (await gw.arequest(s, "POST", "/v1/enroll", data=body)).status for _ in range(130)
            ]

    statuses = asyncio.run(flood())
    assert statuses == [403] * 100 + [429] * 30  # the burst, then refused until time passes
    assert len(gw.ctx.registry.audit_log("SN-bogus", limit=1000)) == 100
    assert "cjb_enroll_requests_rate_limited_total" in gw.operator("GET", "/metrics").text


def test_operator_endpoints_need_the_token(gw: Gateway) -> None:
    auth = {"Authorization": f"Bearer {gw.token}"}
    for path in ("/v1/operator/status", "/v1/operator/devices", "/metrics"):
        # The device listener does not know these routes, even with a good token.
        _refused(gw, gw.request("GET", path, headers=auth), 404, "not-found")
    _refused(gw, gw.request("GET", "/metrics", base=gw.op_url), 401, "unauthorized")
    r = gw.operator("GET", "/v1/operator/status", headers={"Authorization": "Bearer wrong"})
    _refused(gw, r, 401, "unauthorized")
    dev = Device("SN-1")
    _add(gw, dev)
    _enroll_ok(gw, dev)
    assert gw.operator("GET", "/v1/operator/status").body["devices"]["enrolled"] == 1
    assert [d["serial"] for d in gw.operator("GET", "/v1/operator/devices").body] == ["SN-1"]
    t = gw.operator("GET", "/v1/operator/tenants/acme").body
    assert t["vni"] == 100 and t["devices"] == ["SN-1"]
    _refused(gw, gw.operator("GET", "/v1/operator/devices/SN-X"), 404, "unknown-serial")
    r = gw.operator("PUT", "/v1/operator/tenants/acme/catalog", data=b'[{"instance": ""}]')
    _refused(gw, r, 400, "bad-request")
    # The answer says where each problem is, in the one layout every edge uses.
    message = ErrorBody.model_validate(r.body).message
    assert message.startswith("invalid catalog: catalog[0].instance: String should have at least")
    assert "; catalog[0].port: Field required" in message


def test_metrics(gw: Gateway) -> None:
    dev = Device("SN-1")
    _add(gw, dev)
    _enroll_ok(gw, dev)
    gw.enroll(Device("SN-unknown"))
    r = gw.operator("GET", "/metrics")
    assert r.status == 200
    text = r.text
    assert 'cjb_enrollments_total{outcome="ok"} 1.0' in text
    assert 'cjb_enrollments_total{outcome="unknown-serial"} 1.0' in text
    assert 'cjb_devices{state="enrolled"} 1.0' in text
    assert 'cjb_tenant_heartbeat_age_seconds{serial="SN-1",tenant="acme"}' in text
    assert "cjb_nonces_issued_total 2.0" in text


def test_metrics_hook_for_the_data_plane(tmp_path: Path) -> None:
    """The data plane adds its per-tenant counters as extra collectors."""
    from prometheus_client.core import CounterMetricFamily

    class DataPlane:
        def collect(self):  # type: ignore[no-untyped-def]
            frames = CounterMetricFamily(
                "cjb_tenant_frames", "Frames per tenant and direction", labels=["tenant", "dir"]
            )
            frames.add_metric(["acme", "to_service"], 42)
            yield frames

    with gateway(tmp_path, extra_collectors=[DataPlane()]) as gw:
        text = gw.operator("GET", "/metrics").text
    assert 'cjb_tenant_frames_total{dir="to_service",tenant="acme"} 42.0' in text
    assert "cjb_devices" in text


def test_logs_are_json_and_free_of_secrets(gw: Gateway, tmp_path: Path) -> None:
    stream = io.StringIO()
    logs.setup(stream=stream)
    try:
        dev = Device("SN-1")
        _add(gw, dev)
        nonce = gw.nonce()
        body = dev.body(nonce)
        sig = dev.sign(body)
        r = gw.request("POST", "/v1/enroll", data=body, headers={SIGNATURE_HEADER: sig})
        assert r.status == 200
        gw.request("POST", "/v1/enroll", data=body, headers={SIGNATURE_HEADER: sig})  # replay
        gw.enroll(Device("SN-1", factory_key=dev.factory_key))  # clone
        gw.operator("GET", "/metrics")
    finally:
        logging.getLogger("cjb").handlers.clear()
        logging.getLogger("cjb").propagate = True
    out = stream.getvalue()
    lines = [json.loads(line) for line in out.splitlines()]
    assert {"enrolled", "enrollment refused", "ALERT: possible cloned appliance"} <= {
        rec["msg"] for rec in lines
    }
    secrets = {
        "nonce": nonce,
        "signature": sig,
        "operator token": gw.token,
        "factory public key": dev.factory_public,
        "wireguard public key": dev.wg_public,
        "gateway wireguard private key": gw.layout.wg_private.read_text().strip(),
        "CA key": gw.layout.ca_key.read_text().splitlines()[1],
        "device certificate": r.body["device_certificate_pem"].splitlines()[1],
    }
    for what, value in secrets.items():
        assert value not in out, f"{what} leaked into the log"


@pytest.mark.skipif(
    shutil.which("curl") is None, reason="curl not installed (apt-get install curl)"
)
def test_curl_from_outside_python(gw: Gateway) -> None:
    ca = str(gw.layout.ca_cert)
    out = subprocess.run(
        ["curl", "-sS", "--cacert", ca, "-X", "POST", f"{gw.url}/v1/enroll/nonce"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    assert len(json.loads(out)["nonce"]) == 43
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--cacert",
            ca,
            "-H",
            f"Authorization: Bearer {gw.token}",
            f"{gw.op_url}/v1/operator/status",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    assert json.loads(out)["devices"] == {"enrolled": 0, "inventory": 0, "revoked": 0}
    # Oversized body through curl: 413 and a JSON reason.
    proc = subprocess.run(
        [
            "curl",
            "-sS",
            "--cacert",
            ca,
            "-w",
            "\n%{http_code}",
            "--data-binary",
            "@-",
            "-H",
            "Content-Type: application/json",
            f"{gw.url}/v1/enroll",
        ],
        input="x" * (MAX_REQUEST_BODY + 1),
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    body, code = proc.stdout.rsplit("\n", 1)
    assert code == "413" and json.loads(body)["error"] == "body-too-large"


def test_clock_is_injected() -> None:
    c = Clock()
    c.offset = 100
    assert c() > 100
