"""WireGuard key forms: base64 of the raw 32 bytes (config, protocol) and hex (UAPI)."""

from __future__ import annotations

import base64
import binascii

from cjb.common.wireguard.model import WireGuardError

KEY_LEN = 32


def b64_to_raw(key: str, what: str = "key") -> bytes:
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise WireGuardError(
            f"{what}: not base64 (expected 44 characters like `wg genkey`)"
        ) from None
    if len(raw) != KEY_LEN:
        raise WireGuardError(f"{what}: {len(raw)} bytes, expected {KEY_LEN}")
    return raw


def b64_to_hex(key: str, what: str = "key") -> str:
    return b64_to_raw(key, what).hex()


def hex_to_b64(key: str, what: str = "key") -> str:
    try:
        raw = bytes.fromhex(key)
    except ValueError:
        raise WireGuardError(f"{what}: not hex") from None
    if len(raw) != KEY_LEN:
        raise WireGuardError(f"{what}: {len(raw)} bytes, expected {KEY_LEN}")
    return base64.b64encode(raw).decode()


def generate_private_key() -> str:
    """A new X25519 private key, base64 (like `wg genkey`)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    raw = X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return base64.b64encode(raw).decode()


def public_key(private_key: str) -> str:
    """The public key of a base64 private key (like `wg pubkey`)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    key = X25519PrivateKey.from_private_bytes(b64_to_raw(private_key, "private key"))
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def short(public: str) -> str:
    """A public key abbreviated for logs and tables (public keys only; never a private one)."""
    return public[:8] + "…"
