"""The gateway's keys and certificates (`cryptography`): CA, HTTPS server, device certs, WireGuard.

Pure functions: time (`now`) and serial numbers come in as arguments, so tests can pin them.
Private keys are written only through `write_secret` (mode 0600 from the first byte).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cjb.common.private_file import PRIVATE, atomic_write
from cjb.gateway.control.errors import ControlError

CA_VALIDITY = dt.timedelta(days=3650)
SERVER_VALIDITY = dt.timedelta(days=825)
_BACKDATE = dt.timedelta(minutes=5)  # tolerate small clock skew on the verifying side


def write_secret(path: Path, data: bytes, owner: tuple[int, int] | None = None) -> None:
    """Create `path` with mode 0600 before any byte is written; refuse to overwrite."""
    atomic_write(path, data, PRIVATE, exclusive=True, owner=owner)


def new_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ControlError("bad-key", "expected an ECDSA private key")
    return key


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def fingerprint(der: bytes) -> str:
    """SHA-256 of the DER certificate, hex: how the registry names an issued certificate."""
    return hashlib.sha256(der).hexdigest()


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CJB gateway"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def make_ca(
    key: ec.EllipticCurvePrivateKey, name: str, now: dt.datetime, serial: int
) -> x509.Certificate:
    subject = _name(name)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _san_entry(san: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(san))
    except ValueError:
        return x509.DNSName(san)


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    subject_cn: str,
    public_key: ec.EllipticCurvePublicKey,
    now: dt.datetime,
    validity: dt.timedelta,
    serial: int,
    usage: x509.ObjectIdentifier,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject_cn))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )


def make_server_cert(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    sans: list[str],
    now: dt.datetime,
    serial: int,
) -> x509.Certificate:
    if not sans:
        raise ControlError("no-san", "the server certificate needs at least one --san")
    builder = _leaf(
        ca_key,
        ca_cert,
        sans[0],
        key.public_key(),
        now,
        SERVER_VALIDITY,
        serial,
        ExtendedKeyUsageOID.SERVER_AUTH,
    ).add_extension(x509.SubjectAlternativeName([_san_entry(s) for s in sans]), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


@dataclass(frozen=True, slots=True)
class IssuedCert:
    pem: str
    serial_number: int
    fingerprint: str
    not_after: dt.datetime


def check_csr(csr_pem: str, expected_cn: str) -> ec.EllipticCurvePublicKey:
    """A device CSR must be PEM, self-signed correctly, ECDSA P-256, with CN = the serial."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError:
        raise ControlError("bad-csr", "csr_pem is not a PEM certificate request") from None
    if not csr.is_signature_valid:
        raise ControlError("bad-csr", "the CSR's own signature does not verify")
    pub = csr.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != "secp256r1":
        raise ControlError("bad-csr", "the CSR key must be ECDSA P-256 (secp256r1)")
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1 or cns[0].value != expected_cn:
        raise ControlError("bad-csr", f"the CSR subject CN must be the serial {expected_cn!r}")
    return pub


def issue_device_cert(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    serial: str,
    public_key: ec.EllipticCurvePublicKey,
    now: dt.datetime,
    validity: dt.timedelta,
    cert_serial: int,
) -> IssuedCert:
    cert = _leaf(
        ca_key,
        ca_cert,
        serial,
        public_key,
        now,
        validity,
        cert_serial,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ).sign(ca_key, hashes.SHA256())
    return IssuedCert(
        pem=cert_pem(cert).decode(),
        serial_number=cert_serial,
        fingerprint=fingerprint(cert.public_bytes(serialization.Encoding.DER)),
        not_after=cert.not_valid_after_utc,
    )


def cert_serial_from(random_bytes: bytes) -> int:
    """RFC 5280 §4.1.2.2: positive, at most 20 octets; 63 random bits are plenty here."""
    return int.from_bytes(random_bytes[:8], "big") >> 1 or 1


def wireguard_keypair(private_raw: bytes | None = None) -> tuple[str, str]:
    """(private, public) base64 of the raw 32 bytes, the form `wg genkey | wg pubkey` prints."""
    priv = (
        x25519.X25519PrivateKey.from_private_bytes(private_raw)
        if private_raw is not None
        else x25519.X25519PrivateKey.generate()
    )
    raw_priv = priv.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    raw_pub = priv.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return base64.b64encode(raw_priv).decode(), base64.b64encode(raw_pub).decode()


def ed25519_public(b64: str) -> ed25519.Ed25519PublicKey:
    raw = base64.b64decode(b64, validate=True)
    return ed25519.Ed25519PublicKey.from_public_bytes(raw)
