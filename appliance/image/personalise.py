"""`cjb image personalise`: one unit's identity (serial + factory Ed25519 key) into its image.

The key is generated here, written only into the image (PKCS#8 PEM, mode 0600, root:root, at
common/control/identity.py's path), and never printed or stored anywhere else: for a raw disk
image it reaches debugfs through a memfd (RAM), not a temporary file. What is printed is the
public half, as the InventoryRecord the operator imports with `cjb gateway device import`.

Three image forms: a root directory, a root-file-system tarball (rewritten with the identity
members replaced) and a raw disk image (its root partition edited in place with debugfs, since
there are no loop devices to mount it).
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from pydantic import ValidationError

from cjb.appliance.image import ImageError
from cjb.appliance.image.disk import root_offset
from cjb.common.control.identity import ApplianceLayout
from cjb.common.control.protocol import InventoryRecord
from cjb.common.private_file import atomic_output, atomic_write
from cjb.common.validation import validation_problems

KEY_MODE = 0o600
SERIAL_MODE = 0o644
# A personalised image or tarball holds the factory key: only its owner may read it.
PRIVATE_IMAGE_MODE = 0o600
DIR_MODE = 0o755


@dataclass(frozen=True)
class Identity:
    serial: str
    key_pem: bytes  # PKCS#8 PEM; stays in memory until written into the image
    public_b64: str

    def __repr__(self) -> str:  # never show the key, even in a traceback
        return f"Identity(serial={self.serial!r}, public={self.public_b64})"


def new_identity(serial: str, tenant: str | None) -> tuple[Identity, InventoryRecord]:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    public = base64.b64encode(raw).decode()
    try:
        record = InventoryRecord(serial=serial, factory_public_key=public, tenant=tenant)
    except ValidationError as exc:
        problems = "; ".join(validation_problems(exc))
        raise ImageError(
            f"--serial {serial!r}: {problems} (1-64 of A-Z a-z 0-9 . _ -, starting alphanumeric)"
        ) from None
    return Identity(serial, pem, public), record


def identity_files(identity: Identity) -> list[tuple[PurePosixPath, bytes, int]]:
    """(path inside the image, content, mode) for each identity file."""
    layout = ApplianceLayout(Path("/"))
    return [
        (PurePosixPath(layout.serial), f"{identity.serial}\n".encode(), SERIAL_MODE),
        (PurePosixPath(layout.factory_key), identity.key_pem, KEY_MODE),
    ]


class ImageTarget(Protocol):
    def existing_serial(self) -> str | None: ...
    def write(self, files: list[tuple[PurePosixPath, bytes, int]]) -> None: ...


class DirTarget:
    def __init__(self, root: Path) -> None:
        self.root = root

    def existing_serial(self) -> str | None:
        path = ApplianceLayout(self.root).serial
        return path.read_text().strip() if path.is_file() else None

    def write(self, files: list[tuple[PurePosixPath, bytes, int]]) -> None:
        for rel, data, mode in files:
            path = self.root / rel.relative_to("/")
            path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            # An image's files belong to its root user.
            atomic_write(path, data, mode, owner=(0, 0) if os.geteuid() == 0 else None)


class TarTarget:
    """Rewrites the tarball next to itself with the identity members replaced, then renames
    it over the original: a crash leaves either the old or the new tarball, never half."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with tarfile.open(path) as tar:
            first = tar.next()
            self.prefix = "./" if first is not None and first.name.startswith(".") else ""

    def _name(self, rel: PurePosixPath) -> str:
        return self.prefix + str(rel.relative_to("/"))

    def existing_serial(self) -> str | None:
        name = self._name(identity_files(Identity("x", b"", ""))[0][0])
        with tarfile.open(self.path) as tar:
            try:
                member = tar.getmember(name)
            except KeyError:
                return None
            f = tar.extractfile(member)
            return f.read().decode().strip() if f else None

    def write(self, files: list[tuple[PurePosixPath, bytes, int]]) -> None:
        replaced = {self._name(rel) for rel, _, _ in files}
        dirs = {self._name(p) for rel, _, _ in files for p in rel.parents if str(p) != "/"}
        now = int(time.time())
        # The new tarball holds a factory key: 0600 from its first byte, whatever the umask.
        with (
            tarfile.open(self.path) as src,
            atomic_output(self.path, PRIVATE_IMAGE_MODE) as out,
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst,
        ):
            for member in src:
                if member.name in replaced:
                    continue
                dirs.discard(member.name.rstrip("/"))
                dst.addfile(member, src.extractfile(member) if member.isreg() else None)
            for name in sorted(dirs):
                info = tarfile.TarInfo(name)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, DIR_MODE, now
                dst.addfile(info)
            for rel, data, mode in files:
                info = tarfile.TarInfo(self._name(rel))
                info.size, info.mode, info.mtime = len(data), mode, now
                dst.addfile(info, io.BytesIO(data))


class RawTarget:
    """The root partition of a raw disk image, edited with debugfs at its byte offset."""

    def __init__(self, path: Path) -> None:
        if shutil.which("debugfs") is None:
            raise ImageError(
                "debugfs is missing: apt-get install -y --no-install-recommends e2fsprogs"
            )
        self.path = path
        self.device = f"{path}?offset={root_offset(path)}"

    def _debugfs(self, commands: str, write: bool = False, pass_fds: tuple[int, ...] = ()) -> str:
        argv = ["debugfs", *(["-w"] if write else []), "-f", "-", self.device]
        out = subprocess.run(
            argv, input=commands, capture_output=True, text=True, check=False, pass_fds=pass_fds
        )
        if out.returncode != 0:
            raise ImageError(f"debugfs on {self.device} failed: {out.stderr.strip()}")
        return out.stdout

    def _cat(self, path: PurePosixPath) -> bytes | None:
        out = subprocess.run(
            ["debugfs", "-R", f"cat {path}", self.device], capture_output=True, check=False
        )
        if b"File not found" in out.stderr or out.returncode != 0:
            return None
        return out.stdout

    def _mode(self, path: PurePosixPath) -> str:
        out = subprocess.run(
            ["debugfs", "-R", f"stat {path}", self.device],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        found = re.search(r"Mode:\s+(\d+)", out)
        return found.group(1) if found else "?"

    def existing_serial(self) -> str | None:
        data = self._cat(identity_files(Identity("x", b"", ""))[0][0])
        return data.decode().strip() if data else None

    def write(self, files: list[tuple[PurePosixPath, bytes, int]]) -> None:
        os.chmod(self.path, PRIVATE_IMAGE_MODE)  # before the key goes in, not after
        fds = []
        commands = []
        try:
            for rel, data, mode in files:
                for parent in reversed(rel.parents):
                    if str(parent) != "/":
                        commands.append(f"mkdir {parent}")  # "exists" errors are harmless
                # A memfd lives in RAM only: the key never touches the build host's disk.
                fd = os.memfd_create("cjb-identity", os.MFD_CLOEXEC)
                os.write(fd, data)
                fds.append(fd)
                commands += [
                    f"rm {rel}",
                    f"write /proc/self/fd/{fd} {rel}",
                    f"set_inode_field {rel} mode 0{0o100000 | mode:o}",
                    f"set_inode_field {rel} uid 0",
                    f"set_inode_field {rel} gid 0",
                ]
            # debugfs inherits the fds (pass_fds keeps their numbers).
            self._debugfs("\n".join(commands) + "\n", write=True, pass_fds=tuple(fds))
        finally:
            for fd in fds:
                os.close(fd)
        # debugfs reports most errors on stderr with exit 0: read back to be sure.
        for rel, data, mode in files:
            if self._cat(rel) != data:
                raise ImageError(f"{self.path}: writing {rel} into the root partition failed")
            if self._mode(rel) != f"{mode:04o}":
                raise ImageError(f"{self.path}: {rel} has mode {self._mode(rel)}, not {mode:04o}")


def is_gpt_disk(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(512)  # LBA 1 holds the GPT header (UEFI 2.10 §5.3.2)
        return f.read(8) == b"EFI PART"


def is_tarball(path: Path) -> bool:
    # An all-zero file is a valid empty tar to tarfile; a root tarball has members.
    try:
        with tarfile.open(path) as tar:
            return tar.next() is not None
    except tarfile.TarError:
        return False


def open_target(image: Path) -> ImageTarget:
    if image.is_dir():
        if not (image / "etc").is_dir():
            raise ImageError(f"{image} is a directory but not a root file system (no etc/)")
        return DirTarget(image)
    if not image.is_file():
        raise ImageError(f"{image} does not exist: pass a root directory, .rootfs.tar or .img")
    if is_gpt_disk(image):
        return RawTarget(image)
    if is_tarball(image):
        return TarTarget(image)
    raise ImageError(f"{image}: neither a root tarball nor a disk image with a GPT partition table")


def personalise(
    image: Path, serial: str, tenant: str | None = None, force: bool = False
) -> InventoryRecord:
    target = open_target(image)
    identity, record = new_identity(serial, tenant)
    existing = target.existing_serial()
    if existing is not None and not force:
        raise ImageError(
            f"{image} is already personalised as serial {existing!r}; a second key for a flashed "
            "unit makes its inventory record useless. Use --force to replace it (then re-import)."
        )
    target.write(identity_files(identity))
    return record
