"""The appliance's HTTPS adapter against a small fake gateway: real TLS on loopback with
certificates minted here, real Ed25519 signatures over the exact body bytes, mutual TLS for
/v1/device/*. `FakeGateway` is also what tests/test_appliance_agent.py enrolls against."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from cjb.appliance.control_client import ControlClient, ControlClientError, DeviceCredentials
from cjb.appliance.keys import FactoryIdentity, device_keys
from cjb.appliance.lifecycle import Failure, FailureKind
from cjb.common.control.protocol import (
    ENROLL_SIGNING_CONTEXT,
    SIGNATURE_HEADER,
    DeviceConfig,
    EnrollRequest,
    EnrollResponse,
    Heartbeat,
    HeartbeatResponse,
    LanFacts,
    NonceResponse,
    TunnelConfig,
)

# -- a tiny PKI --------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class MiniCA:
    name: str
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    cert: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(self.name))
            .issuer_name(_name(self.name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> str:
        return _pem(self.cert)

    def issue(self, public_key: Any, cn: str, *, server_ip: str | None = None) -> x509.Certificate:
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if server_ip is not None:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(server_ip))]),
                critical=False,
            )
            usage = x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
        else:
            usage = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        return builder.sign(self.key, hashes.SHA256())


# -- the fake gateway --------------------------------------------------------------------


def b64key(key: ed25519.Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


@dataclass
class FakeGateway:
    """Enough of the control API to enroll, heartbeat, bump config and revoke."""

    tmp: Path
    inventory: dict[str, str] = field(default_factory=dict)  # serial -> factory key (b64)
    config: DeviceConfig | None = None
    host: str = "127.0.0.1"
    ca: MiniCA = field(default_factory=lambda: MiniCA("fake gateway CA"))
    revoked: set[str] = field(default_factory=set)
    enrollments: list[EnrollRequest] = field(default_factory=list)
    heartbeats: list[Heartbeat] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    config_fetches: int = 0
    nonces: set[str] = field(default_factory=set)
    bad_nonce_response: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self.ca.issue(key.public_key(), "gateway", server_ip=self.host)
        self.cert_file = self.tmp / "gw-cert.pem"
        self.key_file = self.tmp / "gw-key.pem"
        self.ca_file = self.tmp / "operator-ca.pem"
        self.cert_file.write_text(_pem(cert))
        self.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.ca_file.write_text(self.ca.pem)
        if self.config is None:
            self.config = default_config()

    def bump(self, **changes: Any) -> None:
        with self.lock:
            assert self.config is not None
            changes["config_version"] = self.config.config_version + 1
            self.config = self.config.model_copy(update=changes)

    def start(self) -> None:
        """Bind in the caller's current network namespace, serve from a thread."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        ctx.load_verify_locations(cadata=self.ca.pem)
        ctx.verify_mode = ssl.CERT_OPTIONAL  # enrollment has no client certificate yet
        gateway = self

        class Handler(_Handler):
            gw = gateway

        self.server = ThreadingHTTPServer((self.host, 0), Handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def default_config() -> DeviceConfig:
    return DeviceConfig(
        config_version=1,
        tenant="tenant1",
        tunnel=TunnelConfig(
            vni=101,
            overlay_address=ipaddress.IPv6Address("fd00:cafe::2"),
            gateway_overlay_address=ipaddress.IPv6Address("fd00:cafe::1"),
            gateway_wireguard_public_key=base64.b64encode(b"\x01" * 32).decode(),
            gateway_endpoint="[fd00:b::1]:51820",
        ),
        service_ipv4=ipaddress.IPv4Address("192.168.0.100"),
        cloud_macs=["02:cc:00:00:00:01"],
        heartbeat_seconds=5,
    )


class _Handler(BaseHTTPRequestHandler):
    gw: FakeGateway

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def _send(self, status: int, body: dict[str, Any] | str) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _refuse(self, status: int, code: str, message: str) -> None:
        self.gw.refusals.append(code)
        self._send(status, {"error": code, "message": message})

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _device(self) -> str | None:
        der = self.connection.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        if not der:
            self._refuse(401, "client-certificate-required", "mTLS needed")
            return None
        cert = x509.load_der_x509_certificate(der)
        serial = str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
        if serial in self.gw.revoked:
            self._refuse(403, "certificate-revoked", "the certificate is revoked; re-enroll")
            return None
        return serial

    def do_POST(self) -> None:
        gw = self.gw
        body = self._body()
        if self.path == "/v1/enroll/nonce":
            if gw.bad_nonce_response:
                self._send(200, {"nonce": "short", "expires_in": 120})
                return
            nonce = secrets.token_urlsafe(32)
            with gw.lock:
                gw.nonces.add(nonce)
            self._send(200, NonceResponse(nonce=nonce, expires_in=120).model_dump(mode="json"))
        elif self.path == "/v1/enroll":
            self._enroll(body)
        elif self.path == "/v1/device/heartbeat":
            serial = self._device()
            if serial is None:
                return
            with gw.lock:
                gw.heartbeats.append(Heartbeat.model_validate_json(body))
                assert gw.config is not None
                version = gw.config.config_version
            self._send(200, HeartbeatResponse(config_version=version).model_dump(mode="json"))
        else:
            self._refuse(404, "not-found", self.path)

    def do_GET(self) -> None:
        if self.path != "/v1/device/config":
            self._refuse(404, "not-found", self.path)
            return
        if self._device() is None:
            return
        with self.gw.lock:
            self.gw.config_fetches += 1
            assert self.gw.config is not None
            self._send(200, self.gw.config.model_dump(mode="json"))

    def _enroll(self, body: bytes) -> None:
        gw = self.gw
        req = EnrollRequest.model_validate_json(body)
        known = gw.inventory.get(req.serial)
        if known is None:
            self._refuse(403, "unknown-serial", f"{req.serial} is not in the inventory")
            return
        if req.serial in gw.revoked:
            self._refuse(403, "device-revoked", "an operator revoked this device")
            return
        public = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(known))
        try:
            signature = base64.b64decode(self.headers.get(SIGNATURE_HEADER, ""))
            public.verify(signature, ENROLL_SIGNING_CONTEXT + body)
        except (InvalidSignature, ValueError):
            self._refuse(401, "bad-signature", "the signature does not verify")
            return
        with gw.lock:
            if req.nonce not in gw.nonces:
                self._refuse(400, "nonce-unknown", "ask for a fresh nonce")
                return
            gw.nonces.discard(req.nonce)
            gw.enrollments.append(req)
            assert gw.config is not None
            config = gw.config
        csr = x509.load_pem_x509_csr(req.csr_pem.encode())
        cert = gw.ca.issue(csr.public_key(), req.serial)
        response = EnrollResponse(
            device_certificate_pem=_pem(cert), ca_certificate_pem=gw.ca.pem, config=config
        )
        self._send(200, response.model_dump(mode="json"))


# -- tests -------------------------------------------------------------------------------

SERIAL = "CJB-0001"
LAN = LanFacts(
    prefix=ipaddress.IPv4Network("192.168.0.0/24"),
    service_address=ipaddress.IPv4Address("192.168.0.100"),
)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[FakeGateway, FactoryIdentity]]:
    identity = FactoryIdentity(SERIAL, ed25519.Ed25519PrivateKey.generate())
    gw = FakeGateway(tmp_path, inventory={SERIAL: identity.public_b64})
    gw.start()
    try:
        yield gw, identity
    finally:
        gw.stop()


def _enroll(
    client: ControlClient, identity: FactoryIdentity, tmp: Path
) -> EnrollResponse | Failure:
    keys = device_keys(tmp / "state")
    nonce = client.nonce()
    assert isinstance(nonce, NonceResponse), nonce
    request = EnrollRequest(
        serial=identity.serial,
        factory_public_key=identity.public_b64,
        nonce=nonce.nonce,
        wireguard_public_key=keys.wireguard_public_b64,
        csr_pem=keys.csr_pem(identity.serial),
        lan=LAN,
    )
    return client.enroll(request, identity)


def test_enroll_then_mutual_tls_config_and_heartbeat(
    gateway: tuple[FakeGateway, FactoryIdentity], tmp_path: Path
) -> None:
    gw, identity = gateway
    client = ControlClient(gw.url, gw.ca_file, timeout=5)
    response = _enroll(client, identity, tmp_path)
    assert isinstance(response, EnrollResponse), response
    cert = x509.load_pem_x509_certificate(response.device_certificate_pem.encode())
    assert cert.subject.rfc4514_string() == f"CN={SERIAL}"
    assert gw.enrollments[0].lan == LAN
    # Before credentials, a device call is an auth failure, not a crash.
    assert client.config() == Failure(FailureKind.AUTH, "no device certificate yet")
    (tmp_path / "cert.pem").write_text(response.device_certificate_pem)
    (tmp_path / "ca.pem").write_text(response.ca_certificate_pem)
    client.credentials = DeviceCredentials(
        tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "state" / "device-key.pem"
    )
    config = client.config()
    assert isinstance(config, DeviceConfig) and config.tenant == "tenant1"
    beat = client.heartbeat(
        Heartbeat(serial=SERIAL, config_version=1, uptime_seconds=3, tunnel_up=True)
    )
    assert beat == HeartbeatResponse(config_version=1)
    assert gw.heartbeats[0].uptime_seconds == 3

    gw.revoked.add(SERIAL)
    got = client.heartbeat(
        Heartbeat(serial=SERIAL, config_version=1, uptime_seconds=4, tunnel_up=True)
    )
    assert isinstance(got, Failure) and got.kind is FailureKind.AUTH
    assert (got.status, got.code) == (403, "certificate-revoked")


def test_signature_by_another_key_is_refused_with_the_gateways_reason(
    gateway: tuple[FakeGateway, FactoryIdentity], tmp_path: Path
) -> None:
    gw, identity = gateway
    impostor = FactoryIdentity(SERIAL, ed25519.Ed25519PrivateKey.generate())
    # It claims the real unit's public key but can only sign with its own.
    client = ControlClient(gw.url, gw.ca_file, timeout=5)
    keys = device_keys(tmp_path / "state")
    nonce = client.nonce()
    assert isinstance(nonce, NonceResponse)
    request = EnrollRequest(
        serial=SERIAL,
        factory_public_key=identity.public_b64,
        nonce=nonce.nonce,
        wireguard_public_key=keys.wireguard_public_b64,
        csr_pem=keys.csr_pem(SERIAL),
        lan=LAN,
    )
    got = client.enroll(request, impostor)
    assert isinstance(got, Failure)
    assert (got.kind, got.status, got.code) == (FailureKind.REFUSED, 401, "bad-signature")
    assert got.describe() == (
        "refused by the gateway (HTTP 401: bad-signature: the signature does not verify)"
    )
    assert gw.enrollments == []


def test_server_from_another_ca_is_not_trusted(
    gateway: tuple[FakeGateway, FactoryIdentity], tmp_path: Path
) -> None:
    gw, _ = gateway
    other = tmp_path / "other-ca.pem"
    other.write_text(MiniCA("someone else").pem)
    got = ControlClient(gw.url, other, timeout=5).nonce()
    assert isinstance(got, Failure) and got.kind is FailureKind.UNTRUSTED
    assert got.describe() == (
        "gateway certificate not trusted (self-signed certificate in certificate chain)"
    )


def test_nobody_listening_is_unreachable(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        ca = tmp_path / "ca.pem"
        ca.write_text(MiniCA("ca").pem)
        got = ControlClient(f"https://127.0.0.1:{port}", ca, timeout=2).nonce()
    assert got == Failure(FailureKind.UNREACHABLE, "connection refused")
    assert got.describe() == "gateway unreachable (connection refused)"


def test_missing_operator_ca_says_the_image_is_incomplete(tmp_path: Path) -> None:
    got = ControlClient("https://127.0.0.1:1", tmp_path / "nope.pem").nonce()
    assert isinstance(got, Failure) and got.kind is FailureKind.UNTRUSTED
    assert "nope.pem: missing" in got.detail


def test_response_that_breaks_the_protocol_is_a_bad_response(
    gateway: tuple[FakeGateway, FactoryIdentity],
) -> None:
    gw, _ = gateway
    gw.bad_nonce_response = True
    got = ControlClient(gw.url, gw.ca_file, timeout=5).nonce()
    assert isinstance(got, Failure) and got.kind is FailureKind.BAD_RESPONSE
    assert "not a NonceResponse: nonce" in got.detail


@pytest.mark.parametrize("url", ["http://gw:80", "gw.example", "https://"])
def test_gateway_url_must_be_https(url: str, tmp_path: Path) -> None:
    with pytest.raises(ControlClientError, match="must be https://HOST"):
        ControlClient(url, tmp_path / "ca.pem")


def test_client_certificate_refused_in_the_tls_handshake_is_an_auth_failure(
    tmp_path: Path,
) -> None:
    """A gateway that checks client certificates in TLS itself (CERT_REQUIRED) answers a
    certificate from another CA with an alert (RFC 8446 §6.2), not an HTTP 403: that, too,
    means "enroll again"."""
    gw = FakeGateway(tmp_path)  # for its CA and server certificate only
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(gw.cert_file, gw.key_file)
    server_ctx.load_verify_locations(cadata=gw.ca.pem)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    # TLS 1.2: the client certificate is judged inside the handshake, so the alert always
    # reaches the client. (With TLS 1.3 it comes after the client's request and a TCP reset
    # can overtake it: the client then sees EOF, counts the gateway unreachable, retries.)
    server_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve_once() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1024)
        except (ssl.SSLError, OSError):
            # The alert is out; closing at once with the client's request unread would send
            # a TCP reset that can overtake it (the client would see EOF, not the alert).
            time.sleep(0.5)
        finally:
            conn.close()

    thread = threading.Thread(target=serve_once, daemon=True)
    thread.start()
    stranger = MiniCA("not the gateway's CA")
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "dev-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "dev-cert.pem").write_text(_pem(stranger.issue(key.public_key(), SERIAL)))
    client = ControlClient(f"https://127.0.0.1:{listener.getsockname()[1]}", gw.ca_file, timeout=5)
    client.credentials = DeviceCredentials(
        gw.ca_file, tmp_path / "dev-cert.pem", tmp_path / "dev-key.pem"
    )
    try:
        got = client.config()
    finally:
        thread.join(timeout=5)
        listener.close()
    assert isinstance(got, Failure) and got.kind is FailureKind.AUTH, got
    assert got.detail.startswith("TLS alert ")
