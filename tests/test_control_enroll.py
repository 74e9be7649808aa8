"""The sans-IO enrollment core: every refusal reason, without HTTP or SQLite."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json

import pytest
from controlkit import Device
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from cjb.gateway.control import pki
from cjb.gateway.control.enroll import (
    DeviceFacts,
    EnrollClaim,
    Enroller,
    EnrollmentPolicy,
    LanClaim,
    nonce_refusal,
)
from cjb.gateway.control.errors import ControlError
from cjb.gateway.control.nonces import NonceVerdict

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
NONCE = "N" * 43


@pytest.fixture(scope="module")
def enroller() -> Enroller:
    key = pki.new_ec_key()
    return Enroller(EnrollmentPolicy(), key, pki.make_ca(key, "test CA", NOW, 1))


def _claim(dev: Device, body: bytes) -> EnrollClaim:
    doc = json.loads(body)
    lan = doc["lan"]
    return EnrollClaim(
        serial=doc["serial"],
        factory_public_key=doc["factory_public_key"],
        nonce=doc["nonce"],
        wireguard_public_key=doc["wireguard_public_key"],
        csr_pem=doc["csr_pem"],
        lan=LanClaim(
            ipaddress.IPv4Network(lan["prefix"]),
            None,
            ipaddress.IPv4Address(lan["service_address"]),
            1500,
        ),
    )


def _facts(dev: Device, **over: object) -> DeviceFacts:
    base: dict[str, object] = {
        "serial": dev.serial,
        "factory_public_key": dev.factory_public,
        "tenant": "acme",
        "state": "inventory",
        "wireguard_public_key": None,
    }
    base.update(over)
    return DeviceFacts(**base)  # type: ignore[arg-type]


def _code(fn: object) -> str:
    with pytest.raises(ControlError) as exc:
        fn()  # type: ignore[operator]
    return exc.value.code


def test_verify_then_issue(enroller: Enroller) -> None:
    dev = Device("SN-1")
    body = dev.body(NONCE)
    key = enroller.verify(_claim(dev, body), body, dev.sign(body), _facts(dev))
    cert = enroller.issue(_claim(dev, body), key, NOW, b"\x01" * 8)
    parsed = x509.load_pem_x509_certificate(cert.pem.encode())
    assert parsed.subject.rfc4514_string().endswith("CN=SN-1") or "SN-1" in str(parsed.subject)
    assert cert.not_after == NOW + dt.timedelta(days=30)
    eku = parsed.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in eku
    # Re-enrolling with the bound WireGuard key passes; another key is a clone.
    bound = _facts(dev, state="enrolled", wireguard_public_key=dev.wg_public)
    enroller.verify(_claim(dev, body), body, dev.sign(body), bound)


def test_every_refusal_reason(enroller: Enroller) -> None:
    dev = Device("SN-1")
    body = dev.body(NONCE)
    claim, sig = _claim(dev, body), dev.sign(body)
    cases = {
        "unknown-serial": lambda: enroller.verify(claim, body, sig, None),
        "device-revoked": lambda: enroller.verify(claim, body, sig, _facts(dev, state="revoked")),
        "factory-key-mismatch": lambda: enroller.verify(
            claim, body, sig, _facts(dev, factory_public_key=Device("x").factory_public)
        ),
        "signature-missing": lambda: enroller.verify(claim, body, None, _facts(dev)),
        "bad-signature": lambda: enroller.verify(claim, body + b"x", sig, _facts(dev)),
        "device-unassigned": lambda: enroller.verify(claim, body, sig, _facts(dev, tenant=None)),
        "clone-suspected": lambda: enroller.verify(
            claim,
            body,
            sig,
            _facts(dev, state="enrolled", wireguard_public_key=Device("y").wg_public),
        ),
    }
    for code, fn in cases.items():
        assert _code(fn) == code
    for csr in (dev.csr_pem(cn="SN-2"), dev.csr_pem(key=ec.generate_private_key(ec.SECP384R1()))):
        b = dev.body(NONCE, csr_pem=csr)
        assert _code(lambda b=b: enroller.verify(_claim(dev, b), b, dev.sign(b), _facts(dev))) == (
            "bad-csr"
        )
    b = dev.body(NONCE, lan={"prefix": "10.0.0.0/24", "service_address": "192.168.0.100"})
    assert _code(lambda: enroller.verify(_claim(dev, b), b, dev.sign(b), _facts(dev))) == (
        "bad-lan-facts"
    )


def test_nonce_refusals_are_4xx() -> None:
    for verdict in (NonceVerdict.EXPIRED, NonceVerdict.REPLAYED, NonceVerdict.UNKNOWN):
        err = nonce_refusal(verdict)
        assert 400 <= err.status < 500 and err.code == verdict.value
