"""`cjb image flash`: write + read-back verification to a file, and every refusal — checked
against a fake /proc + /sys tree, and against this machine's real root disk (the check
only: nothing is ever opened for writing on a real device here)."""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from cjb.appliance.image import ImageError
from cjb.appliance.image.flash import (
    System,
    check_block_target,
    check_target,
    flash,
    read_mounts,
)
from cjb.cli.image import image

MOUNTINFO_ROOT = "22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"


def make_image(tmp_path: Path, size: int = (9 << 20) + 123) -> Path:
    img = tmp_path / "disk.img"
    data = bytearray(os.urandom(size))
    data[512:520] = b"EFI PART"
    img.write_bytes(bytes(data))
    return img


def fake_system(
    tmp_path: Path, mountinfo: str = MOUNTINFO_ROOT, holders: tuple[str, ...] = ()
) -> System:
    """/sys/dev/block/8:16 -> sdb with partitions sdb1 (8:17) and sdb2 (8:18)."""
    proc, sys = tmp_path / "proc", tmp_path / "sys"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mountinfo").write_text(mountinfo)
    (proc / "swaps").write_text("Filename\tType\tSize\tUsed\tPriority\n")
    disk = sys / "devices/pci0/block/sdb"
    (disk / "holders").mkdir(parents=True)
    (disk / "dev").write_text("8:16\n")
    for n, minor in (("sdb1", 17), ("sdb2", 18)):
        (disk / n / "holders").mkdir(parents=True)
        (disk / n / "dev").write_text(f"8:{minor}\n")
        (disk / n / "partition").write_text(n[-1])
    for h in holders:
        (disk / "sdb2" / "holders" / h).mkdir()
    (sys / "dev/block").mkdir(parents=True)
    for minor, rel in ((16, "sdb"), (17, "sdb/sdb1"), (18, "sdb/sdb2")):
        (sys / "dev/block" / f"8:{minor}").symlink_to(disk.parent / rel)
    return System(proc=proc, sys=sys)


def test_flash_to_a_file_writes_and_verifies(tmp_path: Path) -> None:
    img = make_image(tmp_path)
    target = tmp_path / "card.bin"
    lines: list[str] = []
    digest = flash(img, target, lines.append, system=fake_system(tmp_path))
    assert digest == hashlib.sha256(img.read_bytes()).hexdigest()
    assert target.read_bytes() == img.read_bytes()
    assert any("(100%)" in line for line in lines)
    assert lines[-1] == f"  verified sha256 {digest} ({img.stat().st_size} bytes)"
    # Flashing over an older, larger file leaves exactly the image.
    target.write_bytes(b"x" * (20 << 20))
    flash(img, target, lambda _l: None, system=fake_system(tmp_path / "again"))
    assert target.stat().st_size == img.stat().st_size


def test_file_refusals(tmp_path: Path) -> None:
    img = make_image(tmp_path)
    system = fake_system(tmp_path)
    with pytest.raises(ImageError, match="it is a directory"):
        check_target(img, tmp_path, system)
    with pytest.raises(ImageError, match="it is the image itself"):
        check_target(img, img, system)
    with pytest.raises(ImageError, match="it is the image itself"):
        flash(img, tmp_path / "." / img.name, lambda _l: None, system)
    assert img.read_bytes()[512:520] == b"EFI PART"  # untouched
    loop = system.sys / "block/loop0/loop"
    loop.mkdir(parents=True)
    backing = tmp_path / "backing.bin"
    backing.write_bytes(b"x")
    (loop / "backing_file").write_text(f"{backing}\n")
    with pytest.raises(ImageError, match=r"it backs loop0 \(losetup -d first\)"):
        check_target(img, backing, system)
    with pytest.raises(ImageError, match="not a block device or a regular file"):
        check_target(img, Path("/dev/null"), system)


def test_images_that_are_not_disk_images(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (root / "f").write_text("x")
    tarball = tmp_path / "rootfs.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(root, arcname=".")
    with pytest.raises(ImageError, match=r"tar archive.*flash the raw disk image"):
        flash(tarball, tmp_path / "out", lambda _l: None)
    empty = tmp_path / "empty.img"
    empty.touch()
    with pytest.raises(ImageError, match="is empty"):
        flash(empty, tmp_path / "out", lambda _l: None)
    assert not (tmp_path / "out").exists()


def test_block_refusals_against_a_fake_sysfs(tmp_path: Path) -> None:
    target = Path("/dev/sdb")
    with pytest.raises(ImageError, match=r"sdb1\).*flash the whole disk"):
        check_block_target(Path("/dev/sdb1"), (8, 17), fake_system(tmp_path / "a"))
    mounted = MOUNTINFO_ROOT + "40 22 8:18 / /media/usb rw - vfat /dev/sdb2 rw\n"
    with pytest.raises(ImageError, match=r"sdb2 is mounted at /media/usb; unmount it first"):
        check_block_target(target, (8, 16), fake_system(tmp_path / "b", mounted))
    as_root = "22 1 8:17 / / rw - ext4 /dev/sdb1 rw\n"
    with pytest.raises(ImageError, match=r"sdb1 holds the running system"):
        check_block_target(target, (8, 16), fake_system(tmp_path / "c", as_root))
    with pytest.raises(ImageError, match=r"sdb2 is in use by dm-0 \(LVM"):
        check_block_target(target, (8, 16), fake_system(tmp_path / "d", holders=("dm-0",)))
    check_block_target(target, (8, 16), fake_system(tmp_path / "e"))  # a free disk passes
    with pytest.raises(ImageError, match="is this a block device"):
        check_block_target(target, (8, 99), fake_system(tmp_path / "f"))


def test_mountinfo_parsing() -> None:
    mounts = read_mounts(
        MOUNTINFO_ROOT + "41 22 0:5 / /dev rw shared:2 master:1 - devtmpfs udev rw\n"
    )
    assert [(m.dev, m.mountpoint, m.source) for m in mounts] == [
        ((253, 0), "/", "/dev/vda"),
        ((0, 5), "/dev", "udev"),
    ]


def test_this_machines_root_disk_is_refused(tmp_path: Path) -> None:
    """The real /proc and /sys: the disk holding / must be refused (check only)."""
    root = next(
        m for m in read_mounts(Path("/proc/self/mountinfo").read_text()) if m.mountpoint == "/"
    )
    node = next(
        (
            p
            for p in Path("/dev").iterdir()
            if p.is_block_device()
            and (os.major(p.stat().st_rdev), os.minor(p.stat().st_rdev)) == root.dev
        ),
        None,
    )
    if node is None or not Path(f"/sys/dev/block/{root.dev[0]}:{root.dev[1]}").exists():
        pytest.skip(f"/ is not on a block device here ({root.source}, {root.dev})")
    img = make_image(tmp_path, 4096)
    with pytest.raises(ImageError, match=r"holds the running system|is mounted at /"):
        check_target(img, node)


def test_cli_flash_reports_progress_on_stderr(tmp_path: Path) -> None:
    img = make_image(tmp_path, 1 << 20)
    target = tmp_path / "out.bin"
    result = CliRunner().invoke(image, ["flash", str(img), str(target)])
    assert result.exit_code == 0, result.output
    assert "verified sha256" in result.output
    refused = CliRunner().invoke(image, ["flash", str(img), str(tmp_path)])
    assert refused.exit_code == 1 and "it is a directory" in refused.output
