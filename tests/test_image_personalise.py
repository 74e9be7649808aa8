"""`cjb image personalise` on the three image forms: a root directory, a root tarball and a
raw GPT disk image made here (mkfs.ext4 -d + sfdisk + dd, no loop devices; edited with
debugfs). The factory key must land only in the image, 0600, and match the printed record."""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from cjb.appliance.image import ImageError
from cjb.appliance.image.disk import MIB, assemble, make_root_fs, plan_disk, root_offset
from cjb.appliance.image.personalise import personalise
from cjb.appliance.image.progress import Progress
from cjb.cli.image import image
from cjb.common.control.protocol import InventoryRecord

SERIAL = "CJB-0001"
KEY = "etc/cjb/factory/factory-key.pem"
SERIAL_FILE = "etc/cjb/factory/serial"


def public_of(pem: bytes) -> str:
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def make_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc/cjb").mkdir(parents=True)
    (root / "etc/cjb/gateway-url").write_text("https://gw.example:8443\n")
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_bytes(b"\x7fELF tool")
    return root


def make_disk(tmp_path: Path) -> Path:
    """A tiny GPT disk: a 1 MiB (unformatted) ESP and an ext4 root made from a directory."""
    for tool in ("mkfs.ext4", "debugfs", "sfdisk", "dumpe2fs"):
        if shutil.which(tool) is None:
            pytest.skip(
                f"{tool} missing: apt-get install -y --no-install-recommends e2fsprogs fdisk"
            )
    root = make_root(tmp_path)
    progress = Progress(lambda _l: None)
    plan = plan_disk("amd64", "test", esp_mib=1, content_bytes=1 << 20, extra_mib=8)
    esp, rootfs, disk = tmp_path / "esp.img", tmp_path / "root.img", tmp_path / "disk.img"
    esp.write_bytes(b"\0" * MIB)
    make_root_fs(root, rootfs, plan, "cjb-root", 1764000000, progress)
    assemble(plan, esp, rootfs, disk, progress)
    esp.unlink()
    rootfs.unlink()
    shutil.rmtree(root)
    return disk


def debugfs(disk: Path, request: str) -> subprocess.CompletedProcess[bytes]:
    device = f"{disk}?offset={root_offset(disk)}"
    return subprocess.run(["debugfs", "-R", request, device], capture_output=True, check=False)


def test_directory_gets_serial_and_a_0600_key_matching_the_record(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    record = personalise(root, SERIAL, tenant="acme")
    assert record == InventoryRecord(
        serial=SERIAL, factory_public_key=record.factory_public_key, tenant="acme"
    )
    assert (root / SERIAL_FILE).read_text() == f"{SERIAL}\n"
    key_file = root / KEY
    assert key_file.stat().st_mode & 0o777 == 0o600
    pem = key_file.read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert public_of(pem) == record.factory_public_key
    assert not list((root / "etc/cjb/factory").glob(".*"))  # no temp files left


def test_second_personalise_refuses_unless_forced(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    first = personalise(root, SERIAL)
    with pytest.raises(ImageError, match=r"already personalised as serial 'CJB-0001'.*--force"):
        personalise(root, "CJB-0002")
    second = personalise(root, "CJB-0002", force=True)
    assert second.factory_public_key != first.factory_public_key
    assert public_of((root / KEY).read_bytes()) == second.factory_public_key


def test_tarball_members_are_replaced_in_place(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    tarball = tmp_path / "rootfs.tar"
    subprocess.run(["tar", "-C", str(root), "-cf", str(tarball), "."], check=True)
    record = personalise(tarball, SERIAL)
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
        key = tar.getmember(f"./{KEY}")
        assert key.mode == 0o600 and key.uid == 0
        f = tar.extractfile(key)
        assert f is not None
        assert public_of(f.read()) == record.factory_public_key
        serial = tar.extractfile(f"./{SERIAL_FILE}")
        assert serial is not None and serial.read() == f"{SERIAL}\n".encode()
        tool = tar.extractfile("./usr/bin/tool")
        assert tool is not None and tool.read() == b"\x7fELF tool"
    assert "./etc/cjb/factory" in names and names.count(f"./{KEY}") == 1
    with pytest.raises(ImageError, match="already personalised"):
        personalise(tarball, SERIAL)
    personalise(tarball, "CJB-0009", force=True)
    with tarfile.open(tarball) as tar:
        assert tar.getnames().count(f"./{KEY}") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root", "rootfs.tar"]


def test_raw_disk_image_root_partition_is_edited_with_debugfs(tmp_path: Path) -> None:
    disk = make_disk(tmp_path)
    size = disk.stat().st_size
    record = personalise(disk, SERIAL, tenant="t1")
    assert disk.stat().st_size == size
    assert debugfs(disk, f"cat /{SERIAL_FILE}").stdout == f"{SERIAL}\n".encode()
    pem = debugfs(disk, f"cat /{KEY}").stdout
    assert public_of(pem) == record.factory_public_key
    stat = debugfs(disk, f"stat /{KEY}").stdout.decode()
    assert "Mode:  0600" in stat and "User:     0   Group:     0" in stat
    # The untouched parts are still there and the file system is consistent.
    assert debugfs(disk, "cat /etc/cjb/gateway-url").stdout == b"https://gw.example:8443\n"
    offset = root_offset(disk)
    part = tmp_path / "part.img"
    with disk.open("rb") as src, part.open("wb") as dst:
        src.seek(offset)
        shutil.copyfileobj(src, dst)
    fsck = subprocess.run(["e2fsck", "-fn", str(part)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    part.unlink()
    with pytest.raises(ImageError, match="already personalised"):
        personalise(disk, "CJB-0002")
    # Nothing but the image in its directory: the key went through a memfd, not a temp file.
    assert [p.name for p in tmp_path.iterdir()] == ["disk.img"]


def test_not_a_disk_image(tmp_path: Path) -> None:
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\0" * 4096)
    with pytest.raises(ImageError, match="neither a root tarball nor a disk image"):
        personalise(junk, SERIAL)
    with pytest.raises(ImageError, match="does not exist"):
        personalise(tmp_path / "nope.img", SERIAL)
    with pytest.raises(ImageError, match="not a root file system"):
        personalise(tmp_path, SERIAL)


def test_cli_prints_one_inventory_record_line_and_no_key(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    result = CliRunner().invoke(image, ["personalise", str(root), "--serial", SERIAL])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1
    record = InventoryRecord.model_validate_json(lines[0])
    assert record.serial == SERIAL and record.tenant is None
    assert "PRIVATE" not in result.output
    assert (root / KEY).read_bytes().decode() not in result.output
    bad = CliRunner().invoke(image, ["personalise", str(root), "--serial", "-bad serial"])
    assert bad.exit_code != 0 and "--serial '-bad serial'" in bad.output
    again = CliRunner().invoke(image, ["personalise", str(root), "--serial", SERIAL])
    assert again.exit_code == 1 and "already personalised" in again.output


def test_identity_repr_hides_the_key() -> None:
    from cjb.appliance.image.personalise import new_identity

    identity, _ = new_identity(SERIAL, None)
    assert "PRIVATE" not in repr(identity) and identity.public_b64 in repr(identity)
    assert io.BytesIO(identity.key_pem).read().startswith(b"-----BEGIN PRIVATE KEY-----")
