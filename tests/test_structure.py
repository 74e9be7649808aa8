"""The layout rules of STYLE.md §8, checked: package list complete, imports point one way."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE_FOLDERS = ("cli", "common", "gateway", "appliance", "service", "lab")


def _packages_on_disk() -> set[str]:
    found = set()
    for folder in SOURCE_FOLDERS:
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT)
            found.add("cjb." + ".".join(rel.parts))
    return found


def test_every_package_folder_is_in_pyproject() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    # Data-only packages mapped from their own folder (image-build/ -> cjb.image_build).
    data = {name for name, folder in setuptools["package-dir"].items() if name != "cjb"}
    assert all((ROOT / setuptools["package-dir"][name]).is_dir() for name in data)
    listed = set(setuptools["packages"]) - data
    missing = _packages_on_disk() - listed
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"
    stale = listed - _packages_on_disk()
    assert not stale, f"listed in pyproject.toml but not on disk: {sorted(stale)}"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", _files("common"), ids=lambda p: str(p.relative_to(ROOT)))
def test_common_imports_neither_side(path: Path) -> None:
    bad = {
        m
        for m in _imports(path)
        if m.startswith(("cjb.gateway", "cjb.appliance", "cjb.lab", "cjb.service"))
    }
    assert not bad, (
        f"{path.relative_to(ROOT)} imports {sorted(bad)}: common must not depend on a side"
    )


SANS_IO_CORES = [
    *sorted((ROOT / "common" / "packet").glob("*.py")),
    *sorted((ROOT / "gateway" / "xlat").glob("*.py")),
]
IO_MODULES = ("pyroute2", "zeroconf", "asyncio", "socket", "select", "time", "threading")


@pytest.mark.parametrize("path", SANS_IO_CORES, ids=lambda p: str(p.relative_to(ROOT)))
def test_cores_are_sans_io(path: Path) -> None:
    bad = {m for m in _imports(path) if m.split(".")[0] in IO_MODULES}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}: the core must stay sans-IO"


def test_no_bare_top_level_common_package_is_importable(tmp_path: Path) -> None:
    # From a neutral directory, so the checkout itself is not on sys.path.
    probe = (
        "import importlib.util as u;"
        "print(u.find_spec('common') is None, u.find_spec('cjb.common') is not None)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["True", "True"]
