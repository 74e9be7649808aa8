"""Enrollment checks (sans-IO): registry facts, the request bytes, time and randomness in;
a verified claim and a device certificate out, or a ControlError naming the reason.

The adapter (api.py) runs, in order: parse the body -> `Enroller.verify` (inventory, factory
key, Ed25519 proof of possession over ENROLL_SIGNING_CONTEXT + body, clone binding, CSR) ->
consume the nonce (nonces.py; only a verified request spends it) -> `Enroller.issue` ->
Registry.commit_enrollment (which checks the binding again under the write lock).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import ipaddress
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509 import Certificate

from cjb.common.control.protocol import ENROLL_SIGNING_CONTEXT, SIGNATURE_HEADER
from cjb.gateway.control import pki
from cjb.gateway.control.errors import ControlError
from cjb.gateway.control.nonces import NonceVerdict


@dataclass(frozen=True, slots=True)
class LanClaim:
    prefix: ipaddress.IPv4Network
    router: ipaddress.IPv4Address | None
    service_address: ipaddress.IPv4Address
    lan_mtu: int


@dataclass(frozen=True, slots=True)
class EnrollClaim:
    """What the device says about itself (the parsed EnrollRequest)."""

    serial: str
    factory_public_key: str
    nonce: str
    wireguard_public_key: str
    csr_pem: str
    lan: LanClaim


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """What the registry knows about that serial."""

    serial: str
    factory_public_key: str
    tenant: str | None
    state: str
    wireguard_public_key: str | None


@dataclass(frozen=True, slots=True)
class EnrollmentPolicy:
    certificate_validity: dt.timedelta = dt.timedelta(days=30)


# Refusals that would tell an unauthenticated caller something about the inventory: the
# wire answer is the same for all of them (REFUSED_CODE); the audit log keeps the reason.
UNIFORM_REFUSALS = frozenset(
    {
        "unknown-serial",
        "device-revoked",
        "factory-key-mismatch",
        "signature-missing",
        "bad-signature",
    }
)
REFUSED_CODE = "enroll-refused"
REFUSED_MESSAGE = (
    "enrollment refused: the serial, the factory key and the signature over the request must "
    "match an enrollable inventory record (the gateway's audit log names the reason)"
)


def uniform_refusal() -> ControlError:
    return ControlError(REFUSED_CODE, REFUSED_MESSAGE, 403)


# A well-formed 64-byte signature to verify when none (or garbage) was sent, so that path
# costs one Ed25519 verification like every other.
_NO_SIGNATURE = bytes(64)


def _signature_ok(public_b64: str, body: bytes, signature_b64: str | None) -> bool:
    try:
        signature = base64.b64decode(signature_b64 or "", validate=True)
    except (binascii.Error, ValueError):
        signature = b""
    if len(signature) != 64:
        signature = _NO_SIGNATURE
    try:
        pki.ed25519_public(public_b64).verify(signature, ENROLL_SIGNING_CONTEXT + body)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return signature_b64 is not None and signature is not _NO_SIGNATURE


_NONCE_REFUSALS = {
    NonceVerdict.EXPIRED: "the nonce is older than NONCE_TTL_SECONDS; ask for a new one",
    NonceVerdict.REPLAYED: "the nonce was already used; ask for a new one",
    NonceVerdict.UNKNOWN: "the gateway did not issue this nonce (or forgot it); ask for a new one",
}


def nonce_refusal(verdict: NonceVerdict) -> ControlError:
    return ControlError(
        verdict.value, _NONCE_REFUSALS[verdict], 409 if verdict.name == "REPLAYED" else 401
    )


class Enroller:
    def __init__(
        self, policy: EnrollmentPolicy, ca_key: ec.EllipticCurvePrivateKey, ca_cert: Certificate
    ) -> None:
        self.policy = policy
        self._ca_key = ca_key
        self._ca_cert = ca_cert
        # Stands in for the factory key of a serial the inventory does not hold.
        self._dummy_key = base64.b64encode(
            ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()
        ).decode()

    def verify(
        self,
        claim: EnrollClaim,
        body: bytes,
        signature_b64: str | None,
        device: DeviceFacts | None,
    ) -> ec.EllipticCurvePublicKey:
        """Every check that needs no state change; returns the CSR's public key.

        The signature is verified in every case (against a throw-away key when the serial is
        unknown), before the inventory facts are looked at, so the refusals for an unknown
        serial, a revoked device, another factory key and a bad signature cost the same; the
        API then answers them alike (UNIFORM_REFUSALS) and only the audit log tells them apart.
        """
        known_key = device.factory_public_key if device is not None else None
        signed = _signature_ok(known_key or self._dummy_key, body, signature_b64)
        if device is None:
            raise ControlError(
                "unknown-serial",
                f"serial {claim.serial} is not in the inventory; the operator imports it with "
                "`cjb gateway device import`",
                403,
            )
        if device.state == "revoked":
            raise ControlError("device-revoked", f"device {claim.serial} is revoked", 403)
        if claim.factory_public_key != device.factory_public_key:
            raise ControlError(
                "factory-key-mismatch",
                "factory_public_key differs from the inventory record for this serial",
                403,
            )
        if not signature_b64:
            raise ControlError("signature-missing", f"send the {SIGNATURE_HEADER} header", 401)
        if not signed:
            raise ControlError(
                "bad-signature",
                f"{SIGNATURE_HEADER} is not an Ed25519 signature by the factory key over "
                "ENROLL_SIGNING_CONTEXT + the exact body bytes",
                403,
            )
        if device.tenant is None:
            raise ControlError(
                "device-unassigned",
                f"device {claim.serial} has no tenant yet; the operator assigns one",
                409,
            )
        if device.state == "enrolled" and device.wireguard_public_key != claim.wireguard_public_key:
            raise ControlError(
                "clone-suspected",
                f"serial {claim.serial} is already enrolled with another WireGuard key; "
                "if the unit was reset, the operator revokes and reinstates it",
                409,
            )
        lan = claim.lan
        if lan.service_address not in lan.prefix or lan.service_address in (
            lan.prefix.network_address,
            lan.prefix.broadcast_address,
        ):
            raise ControlError(
                "bad-lan-facts",
                f"lan.service_address {lan.service_address} is not a host of {lan.prefix}",
                400,
            )
        return pki.check_csr(claim.csr_pem, claim.serial)

    def issue(
        self,
        claim: EnrollClaim,
        csr_key: ec.EllipticCurvePublicKey,
        now: dt.datetime,
        random8: bytes,
    ) -> pki.IssuedCert:
        return pki.issue_device_cert(
            self._ca_key,
            self._ca_cert,
            claim.serial,
            csr_key,
            now,
            self.policy.certificate_validity,
            pki.cert_serial_from(random8),
        )
