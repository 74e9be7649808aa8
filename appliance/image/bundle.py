"""`cjb image bundle`: a built disk image's root file system as a signed RAUC update bundle
(docs/decisions/0009-updates.md).

The bundle holds the root partition of the `.img` `cjb image build` wrote (an ext4 image, the
whole slot) and a manifest naming the image version and the `compatible` string a board's
RAUC checks (`cjb-appliance-<arch>`). `rauc bundle` signs it (CMS) with the operator's
signing certificate and key; the certificate must chain to the operator CA baked into every
image (`/etc/cjb/operator-ca.pem`), which is the keyring the boards verify against. Signing and
verification are RAUC's (OpenSSL): nothing here touches the cryptography.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cjb.appliance.image import ImageError
from cjb.appliance.image.disk import SECTOR, read_partitions, root_offset
from cjb.common.control.image_version import VersionError, check_version

COMPATIBLE = "cjb-appliance-{arch}"
ROOT_SLOT_IMAGE = "rootfs.ext4"


@dataclass(frozen=True)
class BundleOptions:
    image: Path  # the raw .img from `cjb image build`
    version: str
    out: Path  # the .raucb to write
    cert: Path  # the operator's signing certificate (PEM)
    key: Path  # its private key (PEM); read by rauc only
    keyring: Path  # the operator CA: the bundle is checked against it after signing
    arch: str = "amd64"


def manifest(version: str, arch: str) -> str:
    return "\n".join(
        [
            "[update]",
            f"compatible={COMPATIBLE.format(arch=arch)}",
            f"version={version}",
            "",
            "[bundle]",
            "format=verity",  # dm-verity protected payload (RAUC's recommended format)
            "",
            "[image.rootfs]",
            f"filename={ROOT_SLOT_IMAGE}",
            "",
        ]
    )


def extract_root(image: Path, dest: Path) -> None:
    """Copy the root partition of `image` to `dest` (sparse), byte for byte."""
    start = root_offset(image)
    size = next(
        int(str(p["size"])) * SECTOR
        for p in read_partitions(image)
        if int(str(p["start"])) * SECTOR == start
    )
    with image.open("rb") as src, dest.open("wb") as out:
        src.seek(start)
        left = size
        while left:
            chunk = src.read(min(left, 4 << 20))
            if not chunk:
                raise ImageError(f"{image}: root partition runs past the end of the file")
            if chunk.count(0) == len(chunk):
                out.seek(len(chunk), 1)  # keep holes: most of a fresh ext4 is zeros
            else:
                out.write(chunk)
            left -= len(chunk)
        out.truncate(size)


def _run(argv: list[str], what: str) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise ImageError(f"{what} failed: {(out.stderr or out.stdout).strip()}")
    return out.stdout


def bundle(opts: BundleOptions) -> Path:
    if shutil.which("rauc") is None or shutil.which("mksquashfs") is None:
        raise ImageError(
            "rauc and mksquashfs are missing: apt-get install -y --no-install-recommends "
            "rauc squashfs-tools"
        )
    try:
        check_version(opts.version)
    except VersionError as exc:
        raise ImageError(f"--version: {exc}") from None
    for path, what in ((opts.cert, "--cert"), (opts.key, "--key"), (opts.keyring, "--keyring")):
        if not path.is_file():
            raise ImageError(f"{what} {path}: no such file")
    opts.out.unlink(missing_ok=True)  # rauc refuses to overwrite
    with tempfile.TemporaryDirectory(prefix="cjb-bundle-") as tmp:
        content = Path(tmp) / "content"
        content.mkdir()
        (content / "manifest.raucm").write_text(manifest(opts.version, opts.arch))
        extract_root(opts.image, content / ROOT_SLOT_IMAGE)
        _run(
            ["rauc", "bundle", f"--cert={opts.cert}", f"--key={opts.key}",
             f"--keyring={opts.keyring}", str(content), str(opts.out)],
            "rauc bundle",
        )  # fmt: skip
    # What a board does before installing: verify against the operator CA.
    info = _run(
        ["rauc", "info", f"--keyring={opts.keyring}", "--output-format=json", str(opts.out)],
        "rauc info (signature check against the keyring)",
    )
    if f'"version":"{opts.version}"' not in info.replace(" ", ""):
        raise ImageError(f"rauc info does not show version {opts.version}: {info[:300]}")
    return opts.out
