"""`cjb image flash IMAGE TARGET`: write, then prove it by reading the sha256 back.

Refuses, before opening anything for writing, a target that is mounted, holds the running
system (the device of /), is used by another block device (holders: LVM, dm-crypt, md), is
active swap, is a partition, or is a loop device's backing file. Block devices are then opened
with O_EXCL, which the kernel refuses while anything has them open exclusively (a mount does):
a second guard for a race between the check and the write.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cjb.appliance.image import ImageError

CHUNK = 4 << 20


@dataclass(frozen=True)
class System:
    """Where the kernel's views live; tests point these at a fake tree."""

    proc: Path = Path("/proc")
    sys: Path = Path("/sys")


@dataclass(frozen=True)
class Mount:
    dev: tuple[int, int]
    mountpoint: str
    source: str


def read_mounts(mountinfo: str) -> list[Mount]:
    """/proc/self/mountinfo: field 3 is the file system's major:minor (proc(5))."""
    mounts = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 10 or "-" not in fields:
            continue
        major, minor = fields[2].split(":")
        source = fields[fields.index("-") + 2]
        mounts.append(Mount((int(major), int(minor)), fields[4], source))
    return mounts


def _dev_of(sysdir: Path) -> tuple[int, int] | None:
    try:
        major, minor = (sysdir / "dev").read_text().strip().split(":")
    except OSError:
        return None
    return int(major), int(minor)


def block_family(system: System, dev: tuple[int, int]) -> tuple[str, dict[str, Path]]:
    """The disk's name and every block node of it (the disk and its partitions) -> sys dir."""
    node = system.sys / "dev" / "block" / f"{dev[0]}:{dev[1]}"
    try:
        real = node.resolve(strict=True)
    except OSError:
        raise ImageError(f"no {node}: is this a block device the kernel knows?") from None
    family = {real.name: real}
    for child in sorted(real.iterdir()):
        if (child / "partition").exists():
            family[child.name] = child
    return real.name, family


def check_block_target(target: Path, dev: tuple[int, int], system: System) -> None:
    name, family = block_family(system, dev)
    sysdir = family[name]
    if (sysdir / "partition").exists():
        raise ImageError(
            f"{target} is a partition ({name}); flash the whole disk it belongs to, "
            "the image brings its own partition table"
        )
    devs = {d: n for n, p in family.items() if (d := _dev_of(p)) is not None}
    devs.setdefault(dev, name)
    mounts = read_mounts((system.proc / "self" / "mountinfo").read_text())
    for m in mounts:
        if m.dev in devs and m.mountpoint == "/":
            raise ImageError(
                f"refusing {target}: {devs[m.dev]} holds the running system (mounted at /)"
            )
    for m in mounts:
        if m.dev in devs:
            raise ImageError(
                f"refusing {target}: {devs[m.dev]} is mounted at {m.mountpoint}; "
                f"unmount it first (umount {m.mountpoint})"
            )
    for n, p in family.items():
        holders = sorted(h.name for h in (p / "holders").glob("*"))
        if holders:
            raise ImageError(
                f"refusing {target}: {n} is in use by {', '.join(holders)} "
                "(LVM, dm-crypt or RAID); stop those first"
            )
    swaps = (system.proc / "swaps").read_text().splitlines()[1:]
    for line in swaps:
        path = line.split()[0]
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISBLK(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) in devs:
            raise ImageError(f"refusing {target}: {path} is active swap (swapoff {path})")


def check_file_target(target: Path, image: Path, system: System) -> None:
    if target.is_dir():
        raise ImageError(f"refusing {target}: it is a directory; give a device or a file path")
    if not target.exists():
        return
    if target.samefile(image):
        raise ImageError(f"refusing {target}: it is the image itself")
    for backing in system.sys.glob("block/loop*/loop/backing_file"):
        try:
            if Path(backing.read_text().strip()).resolve() == target.resolve():
                raise ImageError(
                    f"refusing {target}: it backs {backing.parts[-3]} (losetup -d first)"
                )
        except OSError:
            continue


def check_target(image: Path, target: Path, system: System = System()) -> bool:
    """Raise ImageError when TARGET must not be written; True when it is a block device."""
    try:
        st = os.stat(target)
    except FileNotFoundError:
        check_file_target(target, image, system)
        return False
    if stat.S_ISBLK(st.st_mode):
        check_block_target(target, (os.major(st.st_rdev), os.minor(st.st_rdev)), system)
        return True
    if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
        check_file_target(target, image, system)
        return False
    raise ImageError(f"refusing {target}: not a block device or a regular file")


def check_image(image: Path) -> int:
    if not image.is_file():
        raise ImageError(f"{image}: no such image file")
    if tarfile.is_tarfile(image):
        raise ImageError(
            f"{image} is a tar archive (the root file system); flash the raw disk image (.img)"
        )
    size = image.stat().st_size
    if size == 0:
        raise ImageError(f"{image} is empty")
    return size


def flash(
    image: Path,
    target: Path,
    echo: Callable[[str], None],
    system: System = System(),
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Write IMAGE to TARGET, read it back, return the verified sha256."""
    size = check_image(image)
    is_block = check_target(image, target, system)
    # O_EXCL on a block device: EBUSY while it is mounted or otherwise claimed.
    flags = os.O_WRONLY | os.O_EXCL if is_block else os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        out = os.open(target, flags | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ImageError(f"cannot open {target} for writing: {exc.strerror}") from None
    written = hashlib.sha256()
    start = last = clock()
    done = 0
    try:
        with image.open("rb") as src:
            while chunk := src.read(CHUNK):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view) :]
                written.update(chunk)
                done += len(chunk)
                now = clock()
                if now - last >= 1.0 or done == size:
                    rate = done / max(now - start, 1e-6) / (1 << 20)
                    echo(
                        f"  wrote {done >> 20}/{size >> 20} MiB ({100 * done // size}%) "
                        f"{rate:.0f} MiB/s"
                    )
                    last = now
        os.fsync(out)
        # Read back from the device, not from the page cache we just filled.
        os.posix_fadvise(out, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(out)
    echo("  verifying (reading back) ...")
    readback = hashlib.sha256()
    fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        left = size
        while left:
            chunk = os.read(fd, min(CHUNK, left))
            if not chunk:
                break
            readback.update(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    if left or readback.hexdigest() != written.hexdigest():
        raise ImageError(
            f"verification failed: {target} reads back sha256 {readback.hexdigest()}, the image "
            f"is {written.hexdigest()}; the medium may be faulty or too small"
        )
    echo(f"  verified sha256 {written.hexdigest()} ({size} bytes)")
    return written.hexdigest()
