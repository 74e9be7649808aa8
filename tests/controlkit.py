"""Helpers for tests/test_control_*.py: a device's side of enrollment (keys, CSR, signed
request) built with `cryptography`, and a real HTTPS gateway on loopback in a thread with an
injectable clock. Test-only: the appliance's real client lives in appliance/."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.x509.oid import NameOID

from cjb.common.control.protocol import ENROLL_SIGNING_CONTEXT, SIGNATURE_HEADER
from cjb.gateway.control import operators
from cjb.gateway.control.server import build_context, start
from cjb.gateway.control.statedir import StateDir, init_state_dir


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def raw_public(key: ed25519.Ed25519PrivateKey | x25519.X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass
class Device:
    """One appliance: factory key, WireGuard key, TLS key; builds signed enroll requests."""

    serial: str
    factory_key: ed25519.Ed25519PrivateKey = field(
        default_factory=ed25519.Ed25519PrivateKey.generate
    )
    wg_key: x25519.X25519PrivateKey = field(default_factory=x25519.X25519PrivateKey.generate)
    tls_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    @property
    def factory_public(self) -> str:
        return b64(raw_public(self.factory_key))

    @property
    def wg_public(self) -> str:
        return b64(raw_public(self.wg_key))

    def record(self, tenant: str | None) -> str:
        return json.dumps(
            {"serial": self.serial, "factory_public_key": self.factory_public, "tenant": tenant}
        )

    def csr_pem(self, cn: str | None = None, key: Any = None) -> str:
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn or self.serial)]))
            .sign(key or self.tls_key, hashes.SHA256())
        )
        return csr.public_bytes(serialization.Encoding.PEM).decode()

    def body(self, nonce: str, **over: Any) -> bytes:
        doc: dict[str, Any] = {
            "version": 1,
            "serial": self.serial,
            "factory_public_key": self.factory_public,
            "nonce": nonce,
            "wireguard_public_key": self.wg_public,
            "csr_pem": self.csr_pem(),
            "lan": {
                "prefix": "192.168.0.0/24",
                "router": "192.168.0.1",
                "service_address": "192.168.0.100",
            },
        }
        doc.update(over)
        return json.dumps(doc).encode()

    def sign(self, body: bytes, key: ed25519.Ed25519PrivateKey | None = None) -> str:
        return b64((key or self.factory_key).sign(ENROLL_SIGNING_CONTEXT + body))

    def write_client_files(self, cert_pem: str, where: Path) -> tuple[Path, Path]:
        cert_path, key_path = where / f"{self.serial}.pem", where / f"{self.serial}.key"
        cert_path.write_text(cert_pem)
        key_path.write_bytes(
            self.tls_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        os.chmod(key_path, 0o600)
        return cert_path, key_path


@dataclass
class Reply:
    status: int
    body: Any
    text: str


class Clock:
    """Real time plus an offset the test moves (TLS still checks real time)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.frozen: float | None = None

    def __call__(self) -> float:
        return (time.time() if self.frozen is None else self.frozen) + self.offset

    def freeze(self) -> None:
        self.frozen = time.time()


class Gateway:
    """A real HTTPS control-plane server in a background thread: the device listener on
    127.0.0.1:<ephemeral> (`url`) and the operator listener on another (`op_url`), with one
    operator credential "test" (`token`)."""

    def __init__(self, layout: StateDir, clock: Clock, extra_collectors: Any = ()) -> None:
        self.layout = layout
        self.clock = clock
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.ctx = build_context(layout, clock=clock, extra_collectors=extra_collectors)
        self.runner, self.port = asyncio.run_coroutine_threadsafe(
            start(self.ctx, layout, "127.0.0.1", 0), self.loop
        ).result(60)
        self.op_runner, self.op_port = asyncio.run_coroutine_threadsafe(
            start(self.ctx, layout, "127.0.0.1", 0, operator=True), self.loop
        ).result(60)
        self.url = f"https://127.0.0.1:{self.port}"
        self.op_url = f"https://127.0.0.1:{self.op_port}"
        self.token = self.add_operator("test")

    def add_operator(self, name: str) -> str:
        cred = operators.new_credential(name)
        self.ctx.registry.add_operator(cred.name, cred.salt, cred.digest)
        return cred.token

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        asyncio.run_coroutine_threadsafe(self.op_runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.ctx.registry.close()

    def ssl(self, client: tuple[Path, Path] | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.layout.ca_cert))
        if client is not None:
            ctx.load_cert_chain(*client)
        return ctx

    async def arequest(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        client: tuple[Path, Path] | None = None,
        base: str | None = None,
    ) -> Reply:
        async with session.request(
            method, (base or self.url) + path, data=data, headers=headers, ssl=self.ssl(client)
        ) as r:
            text = await r.text()
            try:
                body = json.loads(text)
            except ValueError:
                body = None
            return Reply(r.status, body, text)

    def request(self, method: str, path: str, **kw: Any) -> Reply:
        async def go() -> Reply:
            async with aiohttp.ClientSession() as s:
                return await self.arequest(s, method, path, **kw)

        return asyncio.run(go())

    def operator(self, method: str, path: str, **kw: Any) -> Reply:
        """A request to the operator listener, with the test credential unless `headers`
        names another."""
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        return self.request(method, path, headers=headers, base=self.op_url, **kw)

    def nonce(self) -> str:
        r = self.request("POST", "/v1/enroll/nonce")
        if r.status == 429:  # the per-IP limit: let (injected) time refill the bucket
            self.clock.offset += 1.0
            r = self.request("POST", "/v1/enroll/nonce")
        assert r.status == 200, r.text
        return str(r.body["nonce"])

    def enroll(self, dev: Device, nonce: str | None = None, **over: Any) -> Reply:
        body = dev.body(nonce or self.nonce(), **over)
        return self.request(
            "POST",
            "/v1/enroll",
            data=body,
            headers={SIGNATURE_HEADER: dev.sign(body), "Content-Type": "application/json"},
        )


@contextmanager
def gateway(tmp: Path, clock: Clock | None = None, extra_collectors: Any = ()) -> Iterator[Gateway]:
    layout = init_state_dir(tmp / "gw", ["127.0.0.1", "localhost"], "198.51.100.1:51820")
    gw = Gateway(layout, clock or Clock(), extra_collectors)
    try:
        yield gw
    finally:
        gw.close()


STATE_TABLES = ("tenants", "devices", "certificates", "enrollments", "revocations", "meta")


def snapshot(layout: StateDir) -> dict[str, list[tuple[Any, ...]]]:
    """Every registry table except the audit log, for 'registry unchanged' checks."""
    import sqlite3

    conn = sqlite3.connect(layout.registry)
    try:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in STATE_TABLES}  # noqa: S608
    finally:
        conn.close()
