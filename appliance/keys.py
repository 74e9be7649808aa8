"""The appliance's keys: the factory identity it was flashed with, and what it makes itself.

  factory key   Ed25519, PKCS#8 PEM, written at flash time; signs enrollment requests
  WireGuard key X25519, base64 of the raw 32 bytes (the `wg genkey` format), first boot
  device key    ECDSA P-256, PKCS#8 PEM, first boot; its CSR (CN = serial) is sent at enrollment

Private keys are written 0600 with O_EXCL-free atomic replace (temp file + rename + fsync)
and never logged; only public keys and fingerprints leave this module.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.x509.oid import NameOID

from cjb.common.control.identity import ApplianceLayout
from cjb.common.control.protocol import ENROLL_SIGNING_CONTEXT
from cjb.common.private_file import atomic_write

WIREGUARD_KEY = "wireguard.key"
DEVICE_KEY = "device-key.pem"


class IdentityError(Exception):
    """The factory identity is missing or unreadable; the message names the file and the fix."""


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write atomically; the file has `mode` (0600) from birth (common/private_file.py)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, data, mode)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def fingerprint(public_raw: bytes) -> str:
    """SHA256:<base64> of the raw public key, like `ssh-keygen -l` prints."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(public_raw).digest()).decode().rstrip("=")


@dataclass(frozen=True)
class FactoryIdentity:
    serial: str
    key: ed25519.Ed25519PrivateKey

    @property
    def public_raw(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def public_b64(self) -> str:
        return b64(self.public_raw)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_raw)

    def sign_body(self, body: bytes) -> str:
        """SIGNATURE_HEADER value: base64(Ed25519.sign(ENROLL_SIGNING_CONTEXT + body))."""
        return b64(self.key.sign(ENROLL_SIGNING_CONTEXT + body))


def load_factory(layout: ApplianceLayout) -> FactoryIdentity:
    try:
        serial = layout.serial.read_text().strip()
    except FileNotFoundError:
        raise IdentityError(
            f"{layout.serial}: no serial; this unit was not personalised "
            "(run `cjb image personalise IMAGE --serial S` at flash time)"
        ) from None
    try:
        pem = layout.factory_key.read_bytes()
    except FileNotFoundError:
        raise IdentityError(
            f"{layout.factory_key}: no factory key; this unit was not personalised "
            "(run `cjb image personalise IMAGE --serial S` at flash time)"
        ) from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except ValueError as exc:
        raise IdentityError(f"{layout.factory_key}: not a PEM private key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise IdentityError(f"{layout.factory_key}: must be an Ed25519 key (PKCS#8 PEM)")
    return FactoryIdentity(serial, key)


def write_factory(layout: ApplianceLayout, serial: str, key: ed25519.Ed25519PrivateKey) -> None:
    """What flashing does (used by tests and the lab): serial + factory key, 0600."""
    layout.serial.parent.mkdir(parents=True, exist_ok=True)
    layout.serial.write_text(serial + "\n")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(layout.factory_key, pem)


@dataclass(frozen=True)
class DeviceKeys:
    wireguard_private_file: Path
    wireguard_public_b64: str
    device_key_file: Path
    device_key: ec.EllipticCurvePrivateKey

    def csr_pem(self, serial: str) -> str:
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, serial)]))
            .sign(self.device_key, hashes.SHA256())
        )
        return csr.public_bytes(serialization.Encoding.PEM).decode()


def _wireguard_key(path: Path) -> x25519.X25519PrivateKey:
    try:
        raw = base64.b64decode(path.read_text().strip(), validate=True)
        return x25519.X25519PrivateKey.from_private_bytes(raw)
    except FileNotFoundError:
        pass
    except ValueError:
        raise IdentityError(
            f"{path}: not a base64 X25519 key; delete it to make a new one (the gateway "
            "then needs the unit to enroll again)"
        ) from None
    key = x25519.X25519PrivateKey.generate()
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    write_private(path, (b64(raw) + "\n").encode())
    return key


def _device_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private(path, pem)
        return key
    except ValueError:
        raise IdentityError(f"{path}: not a PEM private key; delete it to make a new one") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise IdentityError(f"{path}: must be an ECDSA P-256 key; delete it to make a new one")
    return key


def device_keys(state_dir: Path) -> DeviceKeys:
    """Load the keys made on first boot, making any that are missing (0600)."""
    wg_file = state_dir / WIREGUARD_KEY
    wg = _wireguard_key(wg_file)
    public = wg.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    key_file = state_dir / DEVICE_KEY
    return DeviceKeys(wg_file, b64(public), key_file, _device_key(key_file))
