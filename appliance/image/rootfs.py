"""From the cached base root to the appliance root: the agent, its config, its units.

Everything here works on a root directory on the build host. Commands that must run inside
the image (python3 -m venv, pip) run in a chroot inside a private mount namespace
(`unshare --mount`), so /proc and /dev mounts vanish with the process on every exit path.
No image program ever runs on the host's network here: pip installs offline from a wheelhouse.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cjb.appliance.image import ImageError
from cjb.appliance.image.progress import Progress
from cjb.appliance.image.recipe import Recipe
from cjb.common.control.identity import ApplianceLayout

# The running interpreter's pip (a CI venv has no `pip` on PATH; Debian's python3 has none).
PIP = (sys.executable, "-m", "pip")
PLATFORM_MACHINE = {"amd64": "x86_64", "arm64": "aarch64"}
# bookworm has glibc 2.36: any manylinux tag up to 2_36 runs there. pip wants them spelt out.
MANYLINUX = [f"manylinux_2_{minor}" for minor in range(36, 16, -1)] + ["manylinux2014"]
# Inside the image's root (not the host's /tmp); removed again after the install.
WHEELS_IN_IMAGE = "/tmp/cjb-wheels"  # noqa: S108
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Baked:
    """The operator's settings baked into every unit (common/control/identity.py paths)."""

    operator_ca_pem: bytes | None
    gateway_url: str | None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def extract(tarball: Path, root: Path, progress: Progress) -> None:
    root.mkdir(parents=True, exist_ok=True)
    progress.run(
        [
            "tar",
            "--extract",
            "--file",
            str(tarball),
            "--directory",
            str(root),
            "--numeric-owner",
            "--preserve-permissions",
        ],
        what=f"extracting {tarball}",
    )


def build_wheel(repo: Path, out: Path, progress: Progress, env: dict[str, str]) -> Path:
    """`pip wheel --no-deps` of this checkout; SOURCE_DATE_EPOCH makes it byte-identical."""
    out.mkdir(parents=True, exist_ok=True)
    progress.run(
        [*PIP, "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(repo)],
        env=env,
        what="building the CJB wheel",
        fix="check that the checkout builds: pip wheel --no-deps .",
    )
    wheels = sorted(out.glob("cjb-*.whl"))
    if len(wheels) != 1:
        raise ImageError(f"expected one cjb wheel in {out}, found {[w.name for w in wheels]}")
    return wheels[0]


def pip_download_argv(
    wheel: Path, extras: Sequence[str], arch: str, python: str, dest: Path, pip_cache: Path
) -> list[str]:
    """Fetch the agent's dependencies as wheels for the *image's* platform and Python
    (not the build host's), through pip's cache, so the chroot installs offline."""
    machine = PLATFORM_MACHINE[arch]
    argv = [
        *PIP,
        "download",
        "--quiet",
        "--dest",
        str(dest),
        "--cache-dir",
        str(pip_cache),
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        python,
        "--disable-pip-version-check",
    ]
    for tag in MANYLINUX:
        argv += ["--platform", f"{tag}_{machine}"]
    spec = f"{wheel}[{','.join(extras)}]" if extras else str(wheel)
    return [*argv, spec]


def chroot_argv(root: Path, argv: Sequence[str]) -> list[str]:
    script = 'mount -t proc proc "$0/proc" && mount --rbind /dev "$0/dev" && exec chroot "$0" "$@"'
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--fork",
        "sh",
        "-c",
        script,
        str(root),
        *argv,
    ]


def chroot_env(source_date_epoch: int) -> dict[str, str]:
    return {
        "PATH": CHROOT_PATH,
        "HOME": "/root",
        "LANG": "C.UTF-8",
        # py_compile writes hash-checked .pyc files when this is set: reproducible bytes.
        "SOURCE_DATE_EPOCH": str(source_date_epoch),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_CACHE_DIR": "1",
    }


DEBS_IN_IMAGE = "/tmp/cjb-debs"  # noqa: S108


def install_appliance_deb(
    root: Path, deb: Path, progress: Progress, source_date_epoch: int
) -> None:
    """The cjb-appliance package (`make deb`) instead of wheel + venv, so the image holds
    exactly what `apt-get install ./cjb-appliance_*.deb` gives a hand-installed board.
    Offline: its Depends must already be in the base root (the recipe's [base] packages)."""
    inside = root / DEBS_IN_IMAGE.lstrip("/")
    inside.mkdir(parents=True, exist_ok=True)
    shutil.copy(deb, inside / deb.name)
    try:
        progress.run(
            chroot_argv(root, ["dpkg", "--install", f"{DEBS_IN_IMAGE}/{deb.name}"]),
            env=chroot_env(source_date_epoch),
            what="dpkg --install of cjb-appliance in the image",
            fix="the recipe's [base] packages must satisfy the package's Depends",
        )
    finally:
        shutil.rmtree(inside, ignore_errors=True)


def install_agent(
    root: Path,
    recipe: Recipe,
    wheelhouse: Path,
    wheel: Path,
    progress: Progress,
    source_date_epoch: int,
) -> None:
    inside = root / WHEELS_IN_IMAGE.lstrip("/")
    shutil.copytree(wheelhouse, inside, dirs_exist_ok=True)
    env = chroot_env(source_date_epoch)
    venv = "/" + recipe.venv
    spec = f"{WHEELS_IN_IMAGE}/{wheel.name}[{','.join(recipe.extras)}]"
    try:
        progress.run(
            chroot_argv(root, ["python3", "-m", "venv", venv]),
            env=env,
            what="python3 -m venv in the image",
            fix="the recipe must install python3 and python3-venv",
        )
        progress.run(
            chroot_argv(
                root,
                [
                    f"{venv}/bin/pip",
                    "install",
                    "--no-index",
                    "--find-links",
                    WHEELS_IN_IMAGE,
                    spec,
                ],
            ),
            env=env,
            what="pip install of the CJB wheel in the image",
        )
    finally:
        shutil.rmtree(inside, ignore_errors=True)
    link = root / "usr/local/bin/cjb"
    link.unlink(missing_ok=True)
    link.symlink_to(f"{venv}/bin/cjb")


def copy_overlay(overlay: Path, root: Path) -> list[str]:
    """Copy the recipe's overlay over the root: files 0644 (0755 if executable), root:root."""
    copied = []
    for src in sorted(overlay.rglob("*")):
        rel = src.relative_to(overlay)
        dst = root / rel
        if src.is_dir():
            dst.mkdir(mode=0o755, exist_ok=True)
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.unlink(missing_ok=True)
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o755 if os.access(src, os.X_OK) else 0o644)
        os.chown(dst, 0, 0)
        copied.append(str(rel))
    return copied


def write_file(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def configure_system(root: Path, recipe: Recipe, baked: Baked) -> None:
    write_file(root / "etc/hostname", f"{recipe.hostname}\n".encode(), 0o644)
    write_file(
        root / "etc/hosts",
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{recipe.hostname}\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n".encode(),
        0o644,
    )
    write_file(
        root / "etc/fstab",
        # The root is found by PARTUUID on the kernel command line and mounted rw there; an
        # fstab line for / would only make systemd-remount-fs fail in containers.
        b"# <file system> <mount point> <type> <options> <dump> <pass>\n",
        0o644,
    )
    # Each unit makes its own machine id on first boot (empty file: systemd fills it in).
    write_file(root / "etc/machine-id", b"", 0o444)
    # mmdebstrap copies the build host's resolv.conf and hostname: none of it belongs here.
    (root / "etc/.resolv.conf.systemd-resolved.bak").unlink(missing_ok=True)
    resolv = root / "etc/resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    resolv.symlink_to("../run/systemd/resolve/stub-resolv.conf")
    layout = ApplianceLayout(root)
    if baked.operator_ca_pem is not None:
        write_file(layout.operator_ca, baked.operator_ca_pem, 0o644)
    if baked.gateway_url is not None:
        write_file(layout.gateway_url, f"{baked.gateway_url}\n".encode(), 0o644)
    layout.serial.parent.mkdir(parents=True, exist_ok=True)
    # The serial is not secret; the key file in it is 0600 (personalise).
    os.chmod(layout.serial.parent, 0o755)  # noqa: S103


def enable_units(root: Path, units: Sequence[str], progress: Progress) -> None:
    # systemctl --root edits the image's unit symlinks without running anything from it.
    progress.run(
        ["systemctl", f"--root={root}", "enable", *units],
        what="systemctl enable in the image",
        fix="apt-get install -y --no-install-recommends systemd",
    )


def clamp_mtimes(root: Path, source_date_epoch: int) -> None:
    """Files written during the build get SOURCE_DATE_EPOCH, so tar and mkfs see the same
    times in every build (reproducible-builds.org's clamp rule)."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, ""]:
            path = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(path)
            if st.st_mtime > source_date_epoch:
                os.utime(path, (source_date_epoch, source_date_epoch), follow_symlinks=False)


def write_tarball(root: Path, out: Path, source_date_epoch: int, progress: Progress) -> None:
    progress.run(
        [
            "tar",
            "--create",
            "--file",
            str(out),
            "--directory",
            str(root),
            "--sort=name",
            "--numeric-owner",
            "--format=pax",
            f"--mtime=@{source_date_epoch}",
            "--clamp-mtime",
            "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
            ".",
        ],
        what="writing the root file-system tarball",
    )


def dpkg_packages(root: Path) -> dict[str, str]:
    out = subprocess.run(
        [
            "dpkg-query",
            f"--admindir={root}/var/lib/dpkg",
            "-W",
            "-f",
            "${db:Status-Abbrev}\t${Package}:${Architecture}\t${Version}\n",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    packages = {}
    for line in out.splitlines():
        status, name, version = line.split("\t")
        if status.startswith("ii"):
            packages[name] = version
    return dict(sorted(packages.items()))


def python_packages(root: Path, recipe: Recipe) -> dict[str, str]:
    """Name -> version of every distribution in the image's venv (from .dist-info)."""
    found = {}
    for meta in (root / recipe.venv).glob("lib/python*/site-packages/*.dist-info/METADATA"):
        fields = {}
        for line in meta.read_text(errors="replace").splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        found[fields.get("Name", meta.parent.name)] = fields.get("Version", "?")
    return dict(sorted(found.items(), key=lambda kv: kv[0].lower()))
