"""The device CSR at enrollment: its own signature must verify (RFC 2986 §3: the requester
signs the CertificationRequestInfo with the private key of the key it asks a certificate
for), so nobody gets a certificate for a public key whose private half they do not hold."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cjb.gateway.control.errors import ControlError
from cjb.gateway.control.pki import check_csr

SERIAL = "CJB-CSR-0001"


def _csr(key: ec.EllipticCurvePrivateKey, cn: str = SERIAL) -> x509.CertificateSigningRequest:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())


def _pem(csr: x509.CertificateSigningRequest) -> str:
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def _broken_signature(csr: x509.CertificateSigningRequest) -> str:
    """The same request with one byte of its signature changed (DER: the signature is the
    request's last bytes, so flipping the final byte leaves the structure parseable)."""
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    tampered = x509.load_der_x509_csr(bytes(der))
    return tampered.public_bytes(serialization.Encoding.PEM).decode()


def test_a_well_formed_csr_gives_its_own_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pub = check_csr(_pem(_csr(key)), SERIAL)
    assert pub.public_numbers() == key.public_key().public_numbers()


def test_a_csr_whose_signature_does_not_verify_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    broken = _broken_signature(_csr(key))
    assert not x509.load_pem_x509_csr(broken.encode()).is_signature_valid  # the fixture is real
    with pytest.raises(ControlError, match="signature does not verify") as caught:
        check_csr(broken, SERIAL)
    assert caught.value.code == "bad-csr"


def test_a_csr_for_someone_elses_key_is_refused() -> None:
    """Another key's public half spliced into a request signed by ours: the signature covers
    the request info, so it no longer verifies."""
    ours, theirs = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    mine, other = _csr(ours), _csr(theirs)
    der_mine = mine.public_bytes(serialization.Encoding.DER)
    spki_mine = ours.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    spki_other = theirs.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert der_mine.count(spki_mine) == 1 and len(spki_mine) == len(spki_other)
    spliced = x509.load_der_x509_csr(der_mine.replace(spki_mine, spki_other))
    del other
    with pytest.raises(ControlError, match="signature does not verify"):
        check_csr(spliced.public_bytes(serialization.Encoding.PEM).decode(), SERIAL)


def test_a_csr_for_another_serial_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ControlError, match="CN must be the serial"):
        check_csr(_pem(_csr(key, cn="CJB-SOMEONE-ELSE")), SERIAL)
