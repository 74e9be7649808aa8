"""The raw disk image without loop devices (docs/platform.md): a GPT with an ESP and the root.

The kernel here parses no partition tables and there are no loop devices, so each file system
is made in a file of its own (`mkfs.ext4 -d ROOT`, `mkfs.vfat` + mtools), `sfdisk` writes the
partition table into the disk file, and `dd` puts each file system at its partition's offset.
UUIDs come from the recipe hash and times from SOURCE_DATE_EPOCH, so the bytes are repeatable.
"""

from __future__ import annotations

import math
import os
import subprocess
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cjb.appliance.image import ImageError
from cjb.appliance.image.progress import Progress

MIB = 1 << 20
FIRST_INODE = 11  # ext4: inodes 1-10 are reserved; 2 is the root directory
SECTOR = 512
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
# Discoverable Partitions Specification: root partition type per architecture, so
# systemd-gpt-auto-generator finds the root without a root= argument.
ROOT_TYPE = {
    "amd64": "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
    "arm64": "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
}
NAMESPACE = uuid.UUID("6b1f1d6e-7f35-4d5e-9d57-3c1f0c1a9b00")  # CJB's uuid5 namespace


@dataclass(frozen=True)
class Partition:
    name: str
    type_guid: str
    uuid: str
    start_mib: int
    size_mib: int


@dataclass(frozen=True)
class DiskPlan:
    disk_uuid: str
    esp: Partition
    root: Partition
    total_mib: int  # the last MiB holds the backup GPT

    def sfdisk_script(self) -> str:
        lines = [
            "label: gpt",
            f"label-id: {self.disk_uuid}",
            "unit: sectors",
            "first-lba: 2048",
        ]
        for p in (self.esp, self.root):
            lines.append(
                f"start={p.start_mib * MIB // SECTOR}, size={p.size_mib * MIB // SECTOR}, "
                f'type={p.type_guid}, uuid={p.uuid}, name="{p.name}"'
            )
        return "\n".join(lines) + "\n"


def stable_uuid(seed: str, what: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{seed}/{what}")).upper()


def tree_bytes(root: Path) -> int:
    """What the tree needs in 4 KiB blocks, plus an inode (256 B) per entry."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            st = os.lstat(os.path.join(dirpath, name))
            total += math.ceil(st.st_size / 4096) * 4096 + 256
    return total


def plan_disk(arch: str, seed: str, esp_mib: int, content_bytes: int, extra_mib: int) -> DiskPlan:
    # ext4 metadata (journal, group descriptors, inode tables) takes roughly 8 % at this size.
    root_mib = math.ceil(content_bytes * 1.10 / MIB) + extra_mib
    esp = Partition("ESP", ESP_TYPE, stable_uuid(seed, "esp"), 1, esp_mib)
    root = Partition("cjb-root", ROOT_TYPE[arch], stable_uuid(seed, "root"), 1 + esp_mib, root_mib)
    return DiskPlan(stable_uuid(seed, "disk"), esp, root, 1 + esp_mib + root_mib + 1)


def make_root_fs(
    root: Path, out: Path, plan: DiskPlan, label: str, sde: int, progress: Progress
) -> None:
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": str(sde), "SOURCE_DATE_EPOCH": str(sde)}
    out.unlink(missing_ok=True)
    progress.run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-b",
            "4096",
            "-L",
            label,
            "-U",
            plan.root.uuid.lower(),
            "-E",
            f"hash_seed={plan.root.uuid.lower()},root_owner=0:0",
            "-d",
            str(root),
            str(out),
            f"{plan.root.size_mib}M",
        ],
        env=env,
        what="mkfs.ext4 -d (root file system)",
        fix="apt-get install -y --no-install-recommends e2fsprogs",
    )
    normalise_inode_times(out, sde, env)


def used_inodes(fs_image: Path) -> int:
    out = subprocess.run(
        ["dumpe2fs", "-h", str(fs_image)], capture_output=True, text=True, check=False
    ).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    try:
        return int(fields["Inode count"]) - int(fields["Free inodes"])
    except (KeyError, ValueError):
        raise ImageError(f"dumpe2fs could not read {fs_image}") from None


def normalise_inode_times(fs_image: Path, sde: int, env: dict[str, str]) -> None:
    """mkfs.ext4 -d (1.47.0) copies each source file's atime and ctime, which the build
    cannot control (ctime is the kernel's). Set both to SOURCE_DATE_EPOCH in every used inode:
    a fresh `-d` file system allocates inodes in one run from the first non-reserved one."""
    last = used_inodes(fs_image)
    commands = [
        f"sif <{ino}> {field} @{sde}"
        for ino in (2, *range(FIRST_INODE, last + 1))
        for field in ("atime", "ctime")
    ]
    result = subprocess.run(
        ["debugfs", "-w", "-f", "-", str(fs_image)],
        input="\n".join(commands) + "\n",
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    errors = [line for line in result.stderr.splitlines() if not line.startswith("debugfs ")]
    if result.returncode != 0 or errors:
        raise ImageError(f"debugfs could not normalise inode times: {errors[:3]}")


def esp_files(
    root: Path, efi_loader: str, efi_name: str, cmdline: str, plan: DiskPlan
) -> dict[str, Path | bytes]:
    """What goes on the ESP: systemd-boot as the removable-media loader, one entry, the
    kernel and initrd from the image's /boot."""
    loader = root / efi_loader
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not loader.is_file() or not kernels:
        raise ImageError(
            f"the root has no boot loader ({loader}) or kernel (/boot/vmlinuz-*): "
            "add the kernel and systemd-boot-efi packages to the recipe's [base.arch] table"
        )
    kernel = kernels[-1]
    initrd = root / "boot" / kernel.name.replace("vmlinuz-", "initrd.img-")
    entry = (
        "title CJB appliance\n"
        "linux /vmlinuz\n"
        + ("initrd /initrd.img\n" if initrd.is_file() else "")
        + f"options root=PARTUUID={plan.root.uuid.lower()} rw {cmdline}\n"
    )
    files: dict[str, Path | bytes] = {
        f"EFI/BOOT/{efi_name}": loader,
        "loader/loader.conf": b"default cjb.conf\ntimeout 0\n",
        "loader/entries/cjb.conf": entry.encode(),
        "vmlinuz": kernel,
    }
    if initrd.is_file():
        files["initrd.img"] = initrd
    return files


def faketime_argv(sde: int) -> list[str]:
    """mkfs.vfat and mtools stamp FAT entries with the wall clock and ignore
    SOURCE_DATE_EPOCH; a frozen clock (libfaketime, absolute form) makes the ESP repeatable."""
    stamp = datetime.fromtimestamp(sde, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    return ["faketime", stamp]


def make_esp(
    files: dict[str, Path | bytes],
    out: Path,
    plan: DiskPlan,
    work: Path,
    sde: int,
    progress: Progress,
) -> None:
    env = {**os.environ, "TZ": "UTC", "MTOOLS_SKIP_CHECK": "1"}
    frozen = faketime_argv(sde)
    fix = "apt-get install -y --no-install-recommends dosfstools mtools faketime"
    out.unlink(missing_ok=True)
    volume_id = plan.esp.uuid.replace("-", "")[:8]
    progress.run(
        [
            *frozen,
            "mkfs.vfat",
            "-C",
            "-F",
            "32",
            "-S",
            "512",
            "-s",
            "1",
            "-n",
            "CJB-ESP",
            "-i",
            volume_id,
            str(out),
            str(plan.esp.size_mib * 1024),
        ],
        env=env,
        what="mkfs.vfat (ESP)",
        fix=fix,
        quiet=True,
    )
    staging = work / "esp"
    made: set[str] = set()
    for dest, src in sorted(files.items()):
        parts = dest.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in made:
                progress.run(
                    [*frozen, "mmd", "-i", str(out), f"::/{d}"], env=env, what="mmd (ESP)", fix=fix
                )
                made.add(d)
        if isinstance(src, bytes):
            staged = staging / dest
            staged.parent.mkdir(parents=True, exist_ok=True)
            staged.write_bytes(src)
            src = staged
        progress.run(
            [*frozen, "mcopy", "-i", str(out), str(src), f"::/{dest}"],
            env=env,
            what=f"mcopy {dest} (ESP)",
            fix=fix,
        )


def assemble(plan: DiskPlan, esp: Path, rootfs: Path, out: Path, progress: Progress) -> None:
    out.unlink(missing_ok=True)
    with out.open("wb") as f:
        f.truncate(plan.total_mib * MIB)
    progress.run(
        ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(out)],
        what="sfdisk (GPT)",
        fix="apt-get install -y --no-install-recommends fdisk",
        quiet=True,
        input_text=plan.sfdisk_script(),
    )
    for part, image in ((plan.esp, esp), (plan.root, rootfs)):
        if image.stat().st_size > part.size_mib * MIB:
            raise ImageError(f"{image} does not fit partition {part.name} ({part.size_mib} MiB)")
        progress.run(
            [
                "dd",
                f"if={image}",
                f"of={out}",
                "bs=1M",
                f"seek={part.start_mib}",
                "conv=notrunc,sparse",
                "status=none",
            ],
            what=f"dd {part.name} into the disk image",
        )


def read_partitions(image: Path) -> list[dict[str, object]]:
    """Partitions of a disk image file, from sfdisk --json (start/size in sectors)."""
    import json
    import subprocess

    out = subprocess.run(
        ["sfdisk", "--json", str(image)], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise ImageError(f"{image}: no partition table sfdisk can read: {out.stderr.strip()}")
    table = json.loads(out.stdout)["partitiontable"]
    parts: list[dict[str, object]] = table.get("partitions", [])
    return parts


def root_offset(image: Path) -> int:
    """Byte offset of the CJB root partition in a raw disk image."""
    for part in read_partitions(image):
        if (
            part.get("name") == "cjb-root"
            or str(part.get("type", "")).upper() in ROOT_TYPE.values()
        ):
            return int(str(part["start"])) * SECTOR
    raise ImageError(f"{image}: no partition named cjb-root (is it a CJB disk image?)")
