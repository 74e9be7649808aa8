"""Files CJB ships besides its code, found through `importlib.resources`, so an installed
wheel and a checkout answer the same way:

    cjb.image_build       the appliance image recipe and its overlay (the checkout's image-build/)
    cjb.gateway/systemd   the gateway's units, sysusers.d/tmpfiles.d files, default gateway.json
    cjb.gateway.dataplane.bpf/xlat.bpf.c   the kernel fast path's C source

A wheel installs unpacked, so every resource is a real file; zip imports are not supported
(the image build and the units need paths for other programs).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# The checkout's top-level image-build/ (this file is common/): used only by an editable
# install made before image-build/ became the package cjb.image_build (its import mapping
# lacks the name until `pip install -e .` runs again).
_CHECKOUT_RECIPE = Path(__file__).resolve().parents[1] / "image-build"


class MissingResource(LookupError):
    """A packaged file is absent: the installation is incomplete."""


def _directory(package: str, *parts: str) -> Path:
    where = resources.files(package).joinpath(*parts)
    if not isinstance(where, Path):
        raise MissingResource(f"{package} is not installed as files on disk ({where!r})")
    return where


def image_recipe_dir(check: bool = True) -> Path:
    """The directory holding recipe.toml and overlay/."""
    try:
        where = _directory("cjb.image_build")
    except ModuleNotFoundError:
        where = _CHECKOUT_RECIPE
    if check and not (where / "recipe.toml").is_file():
        raise MissingResource(f"no recipe.toml in {where}: reinstall cjb")
    return where


def gateway_systemd_dir() -> Path:
    """The gateway's units (*.service), *.sysusers.conf, *.tmpfiles.conf and gateway.json."""
    where = _directory("cjb.gateway", "systemd")
    if not any(where.glob("*.service")):
        raise MissingResource(f"no systemd units in {where}: reinstall cjb")
    return where


def bpf_source() -> Path:
    where = _directory("cjb.gateway.dataplane.bpf", "xlat.bpf.c")
    if not where.is_file():
        raise MissingResource(f"no {where}: reinstall cjb")
    return where
