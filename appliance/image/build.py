"""`cjb image build`: recipe -> base root (cached) -> appliance root -> tarball, disk image,
manifest. Each step prints a line with its elapsed time."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from cjb.appliance.image import ImageError
from cjb.appliance.image import disk as disk_mod
from cjb.appliance.image.agent_wheel import check_wheel, is_checkout, wheel_from_installed
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
    install_appliance_deb,
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
    repo: Path = REPO  # a checkout builds its own wheel; an installed cjb is repacked
    keep_root: bool = False  # leave the finished root directory next to the outputs
    agent_wheel: Path | None = None  # the CJB wheel to install, instead of making one
    appliance_deb: Path | None = None  # install the cjb-appliance package instead of a wheel


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


def agent_wheel(
    opts: BuildOptions, out: Path, progress: Progress, env: dict[str, str], sde: int
) -> Path:
    """The given wheel, else `pip wheel` of the checkout, else the installed cjb repacked."""
    if opts.agent_wheel is not None:
        return check_wheel(opts.agent_wheel)
    if is_checkout(opts.repo):
        return build_wheel(opts.repo, out, progress, env)
    progress.note("no checkout: repacking the installed cjb distribution as the agent wheel")
    return wheel_from_installed(out, sde)


def check_appliance_deb(path: Path, arch: str) -> str:
    """The upstream version of a cjb-appliance .deb for ARCH (the image's name carries it)."""
    done = subprocess.run(
        ["dpkg-deb", "--field", str(path), "Package", "Version", "Architecture"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    fields = dict(ln.split(": ", 1) for ln in done.stdout.splitlines() if ": " in ln)
    if done.returncode != 0 or fields.get("Package") != "cjb-appliance":
        raise ImageError(f"--appliance-deb {path}: not a cjb-appliance package (make deb)")
    if fields.get("Architecture") != arch:
        raise ImageError(
            f"--appliance-deb {path}: built for {fields.get('Architecture')}, the image is {arch}"
        )
    return fields["Version"].rsplit("-", 1)[0]


# What the build runs, with the Debian package that provides each.
BUILD_TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "mkfs.ext4": "e2fsprogs",
    "mkfs.vfat": "dosfstools",
    "mmd": "mtools",
    "mcopy": "mtools",
    "sfdisk": "fdisk",
    "dd": "coreutils",
    "tar": "tar",
    "chroot": "coreutils",
    "systemctl": "systemd",
}


def check(opts: BuildOptions, echo: Callable[[str], None]) -> bool:
    """`cjb image build --check`: everything the build needs, without building (no root,
    no network): the recipe, the overlay and the agent's unit in it, the tools, the agent
    wheel, and the operator CA / gateway URL when given. One line per check; True if all pass."""
    ok = True

    def line(passed: bool, what: str, detail: str) -> None:
        nonlocal ok
        ok = ok and passed
        echo(f"{'ok  ' if passed else 'FAIL'} {what:<12} {detail}")

    try:
        recipe = load_recipe(opts.recipe)
        recipe.arch(opts.arch)
    except ImageError as exc:
        line(False, "recipe", str(exc))
        return False
    line(True, "recipe", str(opts.recipe))
    unit = recipe.overlay / "etc/systemd/system" / recipe.unit
    if not recipe.overlay.is_dir():
        line(False, "overlay", f"{recipe.overlay} is missing")
    elif not unit.is_file():
        line(False, "overlay", f"the agent's unit {unit} is missing")
    else:
        count = sum(1 for p in recipe.overlay.rglob("*") if p.is_file())
        line(True, "overlay", f"{recipe.overlay} ({count} files, agent unit {recipe.unit})")
    missing = {tool: deb for tool, deb in BUILD_TOOLS.items() if shutil.which(tool) is None}
    if missing:
        debs = " ".join(sorted(set(missing.values())))
        line(False, "tools", f"missing {sorted(missing)}: apt-get install {debs}")
    else:
        line(True, "tools", " ".join(BUILD_TOOLS))
    if opts.operator_ca is not None:
        try:
            check_operator_ca(opts.operator_ca)
            line(True, "operator CA", str(opts.operator_ca))
        except ImageError as exc:
            line(False, "operator CA", str(exc))
    if opts.gateway_url is not None:
        try:
            line(True, "gateway URL", check_gateway_url(opts.gateway_url))
        except ImageError as exc:
            line(False, "gateway URL", str(exc))
    if opts.appliance_deb is not None:
        try:
            version = check_appliance_deb(opts.appliance_deb, opts.arch)
            line(True, "agent", f"{opts.appliance_deb.name} (cjb-appliance {version})")
        except ImageError as exc:
            line(False, "agent", str(exc))
        return ok
    with tempfile.TemporaryDirectory(prefix="cjb-check-") as tmp:
        progress = Progress(lambda _: None, time.monotonic, total=1)
        try:
            wheel = agent_wheel(
                opts, Path(tmp), progress, dict(os.environ), source_date_epoch(opts.repo)
            )
            line(True, "agent wheel", wheel.name)
        except ImageError as exc:
            line(False, "agent wheel", str(exc))
    if os.geteuid() != 0:
        echo("note: the build itself needs root (mmdebstrap --mode=root, chroot, mkfs)")
    return ok


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
        wheelhouse = work / "wheelhouse"
        if opts.appliance_deb is not None:
            with progress.step(f"install the CJB agent ({opts.appliance_deb.name}, dpkg)"):
                version = check_appliance_deb(opts.appliance_deb, opts.arch)
                install_appliance_deb(root, opts.appliance_deb, progress, sde)
        else:
            with progress.step(
                "install the CJB agent (wheel + its dependencies, offline in the image)"
            ):
                wheel = agent_wheel(opts, work / "wheel", progress, env, sde)
                version = wheel.name.split("-")[1]
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
        name = f"cjb-appliance-{version}-{opts.arch}"
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
                root, arch_recipe.efi_loader, arch_recipe.efi_name, recipe.cmdline(opts.arch), plan
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
                "appliance_deb_sha256": (
                    None if opts.appliance_deb is None else sha256_file(opts.appliance_deb)
                ),
            }
            outputs = {
                p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                for p in (rootfs_tar, disk_image)
            }
            manifest = build_manifest(
                arch=opts.arch,
                suite=recipe.suite,
                base_key=base_key,
                cjb={"version": version, **git_facts(opts.repo)},
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
