"""`cjb image bundle`: a disk image's root partition as a RAUC bundle signed by the operator,
checked with real `rauc` against the operator CA (and refused against another CA)."""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_image_personalise import make_disk

from cjb.appliance.image.disk import read_partitions, root_offset


def _cert(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, signer = issuer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        .sign(signer, hashes.SHA256())
    )


def _pki(where: Path, name: str) -> tuple[Path, Path, Path]:
    """An operator CA and a signing certificate it issued: (ca.pem, signer.pem, signer.key)."""
    where.mkdir()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert(f"{name} CA", ca_key, None)
    key = ec.generate_private_key(ec.SECP256R1())
    signer = _cert(f"{name} signer", key, (ca.subject, ca_key))
    pem = serialization.Encoding.PEM
    (where / "ca.pem").write_bytes(ca.public_bytes(pem))
    (where / "signer.pem").write_bytes(signer.public_bytes(pem))
    (where / "signer.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return where / "ca.pem", where / "signer.pem", where / "signer.key"


def test_bundle_is_signed_verifies_against_the_operator_ca_only_and_holds_the_root(
    tmp_path: Path,
) -> None:
    if shutil.which("rauc") is None or shutil.which("mksquashfs") is None:
        pytest.skip("needs rauc and squashfs-tools (apt-get install rauc squashfs-tools)")
    disk = make_disk(tmp_path)
    # Incompressible content: a near-empty ext4 squashes below RAUC's minimum payload size.
    noise = tmp_path / "noise.bin"
    noise.write_bytes(os.urandom(256 * 1024))
    subprocess.run(
        ["debugfs", "-w", "-R", f"write {noise} /noise.bin", f"{disk}?offset={root_offset(disk)}"],
        capture_output=True, check=True,
    )  # fmt: skip
    ca, cert, key = _pki(tmp_path / "operator", "operator")
    out = tmp_path / "v2.raucb"
    run = subprocess.run(
        [sys.executable, "-m", "cjb.cli", "image", "bundle", str(disk), "--version", "2.0",
         "--out", str(out), "--cert", str(cert), "--key", str(key), "--keyring", str(ca)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "version 2.0, signed" in run.stdout and key.read_bytes() not in out.read_bytes()

    info = subprocess.run(
        ["rauc", "info", f"--keyring={ca}", "--output-format=json", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert info.returncode == 0, info.stderr
    assert '"compatible":"cjb-appliance-amd64"' in info.stdout.replace(" ", "")

    # Another operator's CA does not accept it: a board of another fleet refuses the bundle.
    other, _, _ = _pki(tmp_path / "other", "other")
    refused = subprocess.run(
        ["rauc", "info", f"--keyring={other}", str(out)], capture_output=True, text=True
    )
    assert refused.returncode != 0 and "signature" in (refused.stderr + refused.stdout).lower()

    # The payload is the root partition, byte for byte.
    extracted = tmp_path / "extracted"
    ex = subprocess.run(
        ["rauc", "extract", f"--keyring={ca}", str(out), str(extracted)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert ex.returncode == 0, ex.stderr
    start = root_offset(disk)
    size = next(
        int(p["size"]) * 512 for p in read_partitions(disk) if int(p["start"]) * 512 == start
    )  # type: ignore[call-overload]
    with disk.open("rb") as f:
        f.seek(start)
        assert (extracted / "rootfs.ext4").read_bytes() == f.read(size)


def test_bundle_refuses_a_bad_version_and_missing_keys(tmp_path: Path) -> None:
    disk = make_disk(tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "cjb.cli", "image", "bundle", str(disk), "--version", "../x",
         "--out", str(tmp_path / "x.raucb"), "--cert", "/nonexistent", "--key", "/nonexistent",
         "--keyring", "/nonexistent"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode != 0
    assert "version '../x'" in run.stderr or "rauc and mksquashfs are missing" in run.stderr
