"""The declarative recipe (image-build/recipe.toml, installed as the package data
cjb.image_build) as frozen values, and its cache key."""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cjb.appliance.image import ImageError
from cjb.common.packaged import image_recipe_dir

ARCHES = ("amd64", "arm64")
# The recipe that ships with CJB: image-build/recipe.toml in a checkout, the same file as
# package data in an installed wheel (common/packaged.py).
DEFAULT_RECIPE = image_recipe_dir(check=False) / "recipe.toml"


@dataclass(frozen=True)
class ArchRecipe:
    packages: tuple[str, ...]
    efi_loader: str  # path inside the root of the UEFI boot loader copied to the ESP
    efi_name: str  # its name under /EFI/BOOT/ (the UEFI removable-media default path)
    kernel_cmdline: str | None = None  # replaces [system] kernel_cmdline (serial console names)


@dataclass(frozen=True)
class Recipe:
    directory: Path
    suite: str
    variant: str
    packages: tuple[str, ...]
    arches: dict[str, ArchRecipe]
    python: str
    venv: str
    extras: tuple[str, ...]
    unit: str
    hostname: str
    overlay: Path
    enable: tuple[str, ...]
    kernel_cmdline: str
    esp_mib: int
    root_extra_mib: int
    root_label: str

    def arch(self, arch: str) -> ArchRecipe:
        try:
            return self.arches[arch]
        except KeyError:
            raise ImageError(
                f"the recipe has no [base.arch.{arch}] table; known: {sorted(self.arches)}"
            ) from None

    def cmdline(self, arch: str) -> str:
        return self.arch(arch).kernel_cmdline or self.kernel_cmdline

    def base_packages(self, arch: str) -> tuple[str, ...]:
        return tuple(sorted({*self.packages, *self.arch(arch).packages}))

    def base_key(self, arch: str, mirrors: tuple[str, ...], tool_version: str) -> str:
        """Hash of everything that goes into the base root: same key, same cached tarball."""
        doc = {
            "suite": self.suite,
            "variant": self.variant,
            "arch": arch,
            "packages": self.base_packages(arch),
            "mirrors": mirrors,
            "tool": tool_version,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _get(table: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in table:
        raise ImageError(f"recipe: [{where}] needs `{key}`")
    value = table[key]
    if not isinstance(value, kind):
        raise ImageError(f"recipe: [{where}] {key} must be a {kind.__name__}, not {value!r}")
    return value


def _strings(table: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    values = _get(table, key, list, where)
    if not all(isinstance(v, str) and v for v in values):
        raise ImageError(f"recipe: [{where}] {key} must be a list of non-empty strings")
    return tuple(values)


def load_recipe(path: Path = DEFAULT_RECIPE) -> Recipe:
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ImageError(f"recipe {path} not found: pass --recipe FILE") from None
    except tomllib.TOMLDecodeError as exc:
        raise ImageError(f"recipe {path}: {exc}") from None
    base = _get(doc, "base", dict, "base")
    arches = {
        name: ArchRecipe(
            packages=_strings(t, "packages", f"base.arch.{name}"),
            efi_loader=_get(t, "efi_loader", str, f"base.arch.{name}"),
            efi_name=_get(t, "efi_name", str, f"base.arch.{name}"),
            kernel_cmdline=(
                _get(t, "kernel_cmdline", str, f"base.arch.{name}")
                if "kernel_cmdline" in t
                else None
            ),
        )
        for name, t in _get(base, "arch", dict, "base").items()
    }
    unknown = set(arches) - set(ARCHES)
    if unknown:
        raise ImageError(f"recipe: unsupported architectures {sorted(unknown)}; use {ARCHES}")
    agent = _get(doc, "agent", dict, "agent")
    system = _get(doc, "system", dict, "system")
    disk = _get(doc, "disk", dict, "disk")
    return Recipe(
        directory=path.parent,
        suite=_get(base, "suite", str, "base"),
        variant=_get(base, "variant", str, "base"),
        packages=_strings(base, "packages", "base"),
        arches=arches,
        python=_get(agent, "python", str, "agent"),
        venv=_get(agent, "venv", str, "agent").strip("/"),
        extras=_strings(agent, "extras", "agent"),
        unit=_get(agent, "unit", str, "agent"),
        hostname=_get(system, "hostname", str, "system"),
        overlay=path.parent / _get(system, "overlay", str, "system"),
        enable=_strings(system, "enable", "system"),
        kernel_cmdline=_get(system, "kernel_cmdline", str, "system"),
        esp_mib=_get(disk, "esp_mib", int, "disk"),
        root_extra_mib=_get(disk, "root_extra_mib", int, "disk"),
        root_label=_get(disk, "root_label", str, "disk"),
    )
