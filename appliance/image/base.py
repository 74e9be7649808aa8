"""The base root: mmdebstrap from Debian's packages, cached as a tarball by recipe hash.

Why mmdebstrap (docs/platform.md, measured here): a minbase bookworm root with everything the agent
needs in ≈ 50 s, where debootstrap takes ≈ 90 s and needs an extra apt upgrade step for the
security suite, and mkosi 14 needs workarounds on this machine and cannot make a vfat ESP.
mmdebstrap takes several mirrors (main, -updates, -security) in one pass, installs with
--no-install-recommends, writes a tarball directly and is reproducible with SOURCE_DATE_EPOCH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from cjb.appliance.image import ImageError
from cjb.appliance.image.progress import Progress
from cjb.appliance.image.recipe import Recipe
from cjb.common.private_file import publish

MMDEBSTRAP_FIX = "Install it: apt-get install -y --no-install-recommends mmdebstrap"
QEMU_FIX = (
    "building a foreign architecture needs qemu-user and binfmt: apt-get install -y "
    "--no-install-recommends qemu-user-static binfmt-support"
)


def mmdebstrap_version() -> str:
    try:
        out = subprocess.run(
            ["mmdebstrap", "--version"], capture_output=True, text=True, check=True
        ).stdout
    except (FileNotFoundError, subprocess.CalledProcessError):
        raise ImageError(f"mmdebstrap is not usable. {MMDEBSTRAP_FIX}") from None
    return out.strip()


def mmdebstrap_argv(
    recipe: Recipe, arch: str, mirrors: tuple[str, ...], apt_cache: Path, out: Path
) -> list[str]:
    """The one mmdebstrap call. Downloaded .debs are synced in and out of `apt_cache`
    (mmdebstrap's documented cache recipe), so a rebuild downloads only what changed."""
    cache = str(apt_cache)
    return [
        "mmdebstrap",
        f"--variant={recipe.variant}",
        f"--arch={arch}",
        "--mode=root",
        "--format=tar",
        # Keep the essential .debs in the chroot's archive dir so sync-out can cache them.
        "--skip=essential/unlink",
        f"--include={','.join(recipe.base_packages(arch))}",
        '--aptopt=Acquire::Retries "3"',
        '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
        f"--setup-hook=sync-in {cache} /var/cache/apt/archives/",
        f"--customize-hook=sync-out /var/cache/apt/archives {cache}",
        recipe.suite,
        str(out),
        *mirrors,
    ]


def host_arch() -> str:
    out = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=False
    )
    return out.stdout.strip() or "amd64"


def check_foreign_arch(arch: str) -> None:
    if arch == host_arch():
        return
    qemu = {"arm64": "qemu-aarch64", "amd64": "qemu-x86_64"}[arch]
    binfmt = Path("/proc/sys/fs/binfmt_misc") / qemu
    if not binfmt.exists():
        raise ImageError(f"no binfmt handler for {arch} ({binfmt} missing): {QEMU_FIX}")


def ensure_base(
    recipe: Recipe,
    arch: str,
    mirrors: tuple[str, ...],
    cache_dir: Path,
    progress: Progress,
    source_date_epoch: int,
) -> tuple[Path, str]:
    """Return (base tarball, its key), building it when the cache has none for this key."""
    version = mmdebstrap_version()
    key = recipe.base_key(arch, mirrors, version)
    path = cache_dir / "base" / f"{recipe.suite}-{arch}-{key[:16]}.tar"
    if path.is_file():
        progress.note(f"cached base root {path}")
        return path, key
    check_foreign_arch(arch)
    apt_cache = cache_dir / "apt" / arch
    apt_cache.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(source_date_epoch)}
    argv = mmdebstrap_argv(recipe, arch, mirrors, apt_cache, partial)
    progress.note(f"mmdebstrap {recipe.suite}/{arch} from {mirrors[0].split()[1]}")
    try:
        progress.run(argv, env=env, what="mmdebstrap", fix=MMDEBSTRAP_FIX)
        publish(partial, path, 0o644)
    finally:
        partial.unlink(missing_ok=True)
    # Old bases for this arch are dead weight once the recipe has moved on.
    for old in path.parent.glob(f"{recipe.suite}-{arch}-*.tar"):
        if old != path:
            old.unlink()
    if shutil.disk_usage(cache_dir).free < 2 << 30:
        progress.note(f"warning: less than 2 GiB free in {cache_dir}")
    return path, key
