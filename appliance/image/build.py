"""`cjb image build`: recipe -> base root (cached) -> appliance root -> tarball, disk image,
manifest. Each step prints a line with its elapsed time."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from cjb.appliance.image import ImageError
from cjb.appliance.image import disk as disk_mod
from cjb.appliance.image.base import ensure_base
from cjb.appliance.image.manifest import build_manifest, render, tree_digest
from cjb.appliance.image.progress import Progress
from cjb.appliance.image.recipe import DEFAULT_RECIPE, load_recipe
from cjb.appliance.image.rootfs import (
    Baked,
    build_wheel,
    clamp_mtimes,
    configure_system,
    copy_overlay,
    dpkg_packages,
    enable_units,
    extract,
    install_agent,
    pip_download_argv,
    python_packages,
    sha256_file,
    write_tarball,
)
from cjb.appliance.image.sources import host_sources, mirror_lines
from cjb.common.private_file import atomic_write

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = Path("/var/cache/cjb-image")
STEPS = 7


@dataclass(frozen=True)
class BuildOptions:
    arch: str = "amd64"
    out_dir: Path = Path("dist")
    recipe: Path = DEFAULT_RECIPE
    operator_ca: Path | None = None
    gateway_url: str | None = None
    cache_dir: Path = DEFAULT_CACHE
    repo: Path = REPO
    keep_root: bool = False  # leave the finished root directory next to the outputs


@dataclass(frozen=True)
class BuildResult:
    rootfs_tar: Path
    disk_image: Path
    manifest: Path
    root_dir: Path | None
    timings: dict[str, float] = field(default_factory=dict)


def check_gateway_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ImageError(
            f"--gateway-url {url!r}: must be an https:// URL with a host, "
            "e.g. https://gateway.example:8443 (enrollment only talks TLS)"
        )
    return url.rstrip("/")


def check_operator_ca(path: Path) -> bytes:
    from cryptography import x509

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"--operator-ca {path}: {exc.strerror}") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ImageError(
            f"--operator-ca {path}: not a PEM certificate; pass the operator CA "
            "(e.g. the gateway state directory's ca.pem)"
        ) from None
    for cert in certs:
        try:
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            continue
        if not bc.ca:
            raise ImageError(f"--operator-ca {path}: {cert.subject.rfc4514_string()} is not a CA")
    return data


def source_date_epoch(repo: Path) -> int:
    """$SOURCE_DATE_EPOCH, else the commit time of the checkout's HEAD."""
    if "SOURCE_DATE_EPOCH" in os.environ:
        return int(os.environ["SOURCE_DATE_EPOCH"])
    out = subprocess.run(
        ["git", "-C", str(repo), "log", "-1", "--format=%ct"],
        capture_output=True,
        text=True,
        check=False,
    )
    return int(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else 0


def git_facts(repo: Path) -> dict[str, object]:
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {"git_commit": head or None}


def build(
    opts: BuildOptions, echo: Callable[[str], None], clock: Callable[[], float] = time.monotonic
) -> BuildResult:
    if os.geteuid() != 0:
        raise ImageError("cjb image build needs root (mmdebstrap --mode=root, chroot, mkfs)")
    recipe = load_recipe(opts.recipe)
    recipe.arch(opts.arch)
    baked = Baked(
        check_operator_ca(opts.operator_ca) if opts.operator_ca else None,
        check_gateway_url(opts.gateway_url) if opts.gateway_url else None,
    )
    if baked.operator_ca_pem is None or baked.gateway_url is None:
        echo(
            "warning: no --operator-ca/--gateway-url: the image cannot enroll until both "
            "are written to /etc/cjb/ (common/control/identity.py)"
        )
    sde = source_date_epoch(opts.repo)
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(sde)}
    progress = Progress(echo, clock, total=STEPS)
    mirrors = mirror_lines(recipe.suite, host_sources())
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    work = opts.out_dir / f".work-{opts.arch}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    root = work / "root"
    try:
        with progress.step(f"base root ({recipe.suite}/{opts.arch}, mmdebstrap, cached)"):
            base_tar, base_key = ensure_base(
                recipe, opts.arch, mirrors, opts.cache_dir, progress, sde
            )
        with progress.step("extract the base root"):
            extract(base_tar, root, progress)
        with progress.step(
            "install the CJB agent (wheel + its dependencies, offline in the image)"
        ):
            wheel = build_wheel(opts.repo, work / "wheel", progress, env)
            wheelhouse = work / "wheelhouse"
            progress.run(
                pip_download_argv(
                    wheel,
                    recipe.extras,
                    opts.arch,
                    recipe.python,
                    wheelhouse,
                    opts.cache_dir / "pip",
                ),
                env=env,
                what="pip download (the agent's dependencies for the image)",
            )
            install_agent(root, recipe, wheelhouse, wheel, progress, sde)
        with progress.step("system configuration (overlay, operator CA, gateway URL, units)"):
            copy_overlay(recipe.overlay, root)
            configure_system(root, recipe, baked)
            enable_units(root, recipe.enable, progress)
            clamp_mtimes(root, sde)
        name = f"cjb-appliance-{wheel.name.split('-')[1]}-{opts.arch}"
        rootfs_tar = opts.out_dir / f"{name}.rootfs.tar"
        disk_image = opts.out_dir / f"{name}.img"
        manifest_path = opts.out_dir / f"{name}.manifest.json"
        with progress.step("root file-system tarball"):
            write_tarball(root, rootfs_tar, sde, progress)
        with progress.step("disk image (GPT: ESP + root; mkfs.ext4 -d, mtools, sfdisk, dd)"):
            arch_recipe = recipe.arch(opts.arch)
            plan = disk_mod.plan_disk(
                opts.arch,
                base_key + sha256_file(rootfs_tar),
                recipe.esp_mib,
                disk_mod.tree_bytes(root),
                recipe.root_extra_mib,
            )
            esp_img, root_img = work / "esp.img", work / "root.img"
            files = disk_mod.esp_files(
                root, arch_recipe.efi_loader, arch_recipe.efi_name, recipe.kernel_cmdline, plan
            )
            disk_mod.make_esp(files, esp_img, plan, work, sde, progress)
            disk_mod.make_root_fs(root, root_img, plan, recipe.root_label, sde, progress)
            disk_mod.assemble(plan, esp_img, root_img, disk_image, progress)
        with progress.step("manifest"):
            overlay = tree_digest(recipe.overlay)
            inputs: dict[str, object] = {
                "recipe_sha256": sha256_file(opts.recipe),
                "overlay_sha256": overlay,
                "mirrors": list(mirrors),
                "base_root_sha256": sha256_file(base_tar),
                "wheels_sha256": {w.name: sha256_file(w) for w in sorted(wheelhouse.glob("*.whl"))},
                "operator_ca_sha256": (
                    None if baked.operator_ca_pem is None else sha256_file(opts.operator_ca)  # type: ignore[arg-type]
                ),
                "gateway_url": baked.gateway_url,
            }
            outputs = {
                p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                for p in (rootfs_tar, disk_image)
            }
            manifest = build_manifest(
                arch=opts.arch,
                suite=recipe.suite,
                base_key=base_key,
                cjb={"version": wheel.name.split("-")[1], **git_facts(opts.repo)},
                source_date_epoch=sde,
                debian_packages=dpkg_packages(root),
                python_packages=python_packages(root, recipe),
                inputs=inputs,
                outputs=outputs,
                disk={
                    "disk_uuid": plan.disk_uuid,
                    "esp": {
                        "start_mib": plan.esp.start_mib,
                        "size_mib": plan.esp.size_mib,
                        "uuid": plan.esp.uuid,
                    },
                    "root": {
                        "start_mib": plan.root.start_mib,
                        "size_mib": plan.root.size_mib,
                        "uuid": plan.root.uuid,
                    },
                },
            )
            atomic_write(manifest_path, render(manifest), 0o644)
        root_dir = None
        if opts.keep_root:
            root_dir = opts.out_dir / f"{name}.root"
            shutil.rmtree(root_dir, ignore_errors=True)
            os.replace(root, root_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = sum(progress.timings.values())
    echo(f"built in {total:.1f} s: {rootfs_tar}, {disk_image}, {manifest_path}")
    return BuildResult(rootfs_tar, disk_image, manifest_path, root_dir, dict(progress.timings))
