"""`cjb image …`: build, personalise and flash the appliance firmware image."""

from __future__ import annotations

from pathlib import Path

import click

from cjb.appliance.image import ImageError


@click.group()
def image() -> None:
    """Build, personalise and flash the appliance firmware image."""


@image.command()
@click.option("--arch", type=click.Choice(["amd64", "arm64"]), default="amd64", show_default=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("dist"),
    show_default=True,
    help="Directory for the outputs.",
)
@click.option(
    "--operator-ca",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The operator's CA certificate (PEM), baked in as /etc/cjb/operator-ca.pem.",
)
@click.option("--gateway-url", help="e.g. https://gateway.example:8443 (/etc/cjb/gateway-url).")
@click.option(
    "--recipe",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Recipe TOML (default: the one installed with cjb, image-build/recipe.toml).",
)
@click.option(
    "--agent-wheel",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="The CJB wheel to install in the image (default: build it from this checkout, "
    "or repack the installed cjb).",
)
@click.option(
    "--appliance-deb",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Install this cjb-appliance .deb (make deb) instead of a wheel: the image then "
    "holds what a hand-installed board gets.",
)
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Check the recipe, overlay, tools and agent wheel, then stop (no root needed).",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/var/cache/cjb-image"),
    show_default=True,
    help="Base roots, .debs and wheels kept between builds.",
)
@click.option("--keep-root", is_flag=True, help="Also leave the root directory (NAME.root/).")
def build(
    arch: str,
    out_dir: Path,
    operator_ca: Path | None,
    gateway_url: str | None,
    recipe: Path | None,
    cache_dir: Path,
    keep_root: bool,
    agent_wheel: Path | None,
    appliance_deb: Path | None,
    check_only: bool,
) -> None:
    """Build the firmware: root-file-system tarball, raw disk image, manifest."""
    from cjb.appliance.image.build import BuildOptions
    from cjb.appliance.image.build import build as run_build
    from cjb.appliance.image.build import check as run_check
    from cjb.appliance.image.recipe import DEFAULT_RECIPE

    opts = BuildOptions(
        arch=arch,
        out_dir=out_dir,
        recipe=recipe or DEFAULT_RECIPE,
        operator_ca=operator_ca,
        gateway_url=gateway_url,
        cache_dir=cache_dir,
        keep_root=keep_root,
        agent_wheel=agent_wheel,
        appliance_deb=appliance_deb,
    )
    if agent_wheel is not None and appliance_deb is not None:
        raise click.UsageError("--agent-wheel and --appliance-deb exclude each other")
    if check_only:
        if not run_check(opts, echo=click.echo):
            raise click.ClickException("the image cannot be built: see the FAIL lines above")
        return
    try:
        run_build(opts, echo=click.echo)
    except ImageError as exc:
        raise click.ClickException(str(exc)) from None


@image.command()
@click.argument("image_path", metavar="IMAGE", type=click.Path(exists=True, path_type=Path))
@click.option("--serial", required=True, help="The unit's serial number (as on its label).")
@click.option("--tenant", default=None, help="Tenant to put in the inventory record.")
@click.option("--force", is_flag=True, help="Replace an identity already in the image.")
def personalise(image_path: Path, serial: str, tenant: str | None, force: bool) -> None:
    """Write one unit's serial and a new factory key into IMAGE (root directory,
    .rootfs.tar or raw .img); print its inventory record for `cjb gateway device import`.

    The private key is written only into the image; stdout gets the public record.
    """
    from cjb.appliance.image.personalise import personalise as run_personalise

    try:
        record = run_personalise(image_path, serial, tenant, force)
    except ImageError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(record.model_dump_json())


@image.command()
@click.argument("image_path", metavar="IMAGE", type=click.Path(exists=True, path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
def flash(image_path: Path, target: Path) -> None:
    """Write IMAGE to TARGET (a block device or a file) and verify it by reading back.

    Refuses targets that are mounted, hold the running system, are partitions, swap, or in
    use by LVM/dm/md.
    """
    from cjb.appliance.image.flash import flash as run_flash

    try:
        run_flash(image_path, target, echo=lambda line: click.echo(line, err=True))
    except ImageError as exc:
        raise click.ClickException(str(exc)) from None


@image.command("bundle")
@click.argument("image_path", metavar="IMAGE", type=click.Path(exists=True, path_type=Path))
@click.option("--version", "version", required=True, help="The image version (e.g. 2.0).")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="The .raucb.")
@click.option("--cert", required=True, type=click.Path(path_type=Path), help="Signing cert (PEM).")
@click.option("--key", required=True, type=click.Path(path_type=Path), help="Its key (PEM).")
@click.option(
    "--keyring",
    required=True,
    type=click.Path(path_type=Path),
    help="The operator CA baked into the images (--operator-ca of `build`): checked after signing.",
)
@click.option("--arch", type=click.Choice(["amd64", "arm64"]), default="amd64", show_default=True)
def bundle(
    image_path: Path, version: str, out: Path, cert: Path, key: Path, keyring: Path, arch: str
) -> None:
    """Make IMAGE's root file system a signed RAUC update bundle for `cjb gateway update`."""
    from cjb.appliance.image.bundle import BundleOptions
    from cjb.appliance.image.bundle import bundle as run_bundle

    try:
        path = run_bundle(BundleOptions(image_path, version, out, cert, key, keyring, arch))
    except ImageError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{path}: version {version}, signed, verified against {keyring}")
