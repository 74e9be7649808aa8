"""The layout rules, checked: package list complete, imports point one way, cores sans-IO."""

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


# The layers, lowest first. A module may import from its own layer and the ones below it,
# never from one above it or beside it (docs/architecture.md, "Layers"). Each rule:
# (folder whose files are checked, module prefixes they must not import, why).
IMPORT_RULES = [
    (
        "common",
        ("cjb.cli", "cjb.lab", "cjb.gateway", "cjb.appliance", "cjb.service"),
        "common is the bottom layer: it must not depend on a side, the lab or the CLI",
    ),
    (
        "gateway/xlat",
        ("cjb.gateway.dataplane", "cjb.gateway.control", "cjb.cli", "cjb.lab"),
        "the translator is a library the data plane uses, never the other way round",
    ),
    (
        "gateway/control",
        ("cjb.gateway.dataplane", "cjb.cli", "cjb.lab"),
        "the data plane builds on the control plane's registry, never the other way round;"
        " conventions both use live in common/",
    ),
    (
        "gateway",
        ("cjb.appliance", "cjb.service"),
        "the gateway shares only common/ with the appliance and the service host",
    ),
    (
        "appliance",
        ("cjb.gateway", "cjb.service", "cjb.cli", "cjb.lab"),
        "the appliance ships alone on a small board: it shares only common/ with the gateway",
    ),
    (
        "service",
        ("cjb.gateway", "cjb.appliance", "cjb.cli", "cjb.lab"),
        "the service host's helpers share only common/ with the rest",
    ),
]


def _import_cases() -> list[tuple[Path, tuple[str, ...], str]]:
    return [(path, banned, why) for folder, banned, why in IMPORT_RULES for path in _files(folder)]


@pytest.mark.parametrize(
    ("path", "banned", "why"),
    _import_cases(),
    ids=[f"{p.relative_to(ROOT)}-not-{b[0]}" for p, b, _ in _import_cases()],
)
def test_imports_point_down(path: Path, banned: tuple[str, ...], why: str) -> None:
    bad = {m for m in _imports(path) if m.startswith(banned)}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}: {why}"


def test_import_rules_can_fail() -> None:
    # The rule table must catch the edge this test exists for (control -> dataplane).
    probe = ROOT / "gateway" / "control" / "api.py"
    rule = next(banned for folder, banned, _ in IMPORT_RULES if folder == "gateway/control")
    assert "cjb.gateway.dataplane.kernel_spec".startswith(rule)
    assert probe in _files("gateway/control")


# Sans-IO cores: pure state machines and codecs, driven by their callers' IO adapters.
SANS_IO_CORES = sorted(
    {
        *(ROOT / "common" / "packet").glob("*.py"),
        # All of the translator, its ALGs included. offline/ is excluded on purpose: it is
        # the translator's IO adapter (pcap files in, pcap files and reports out).
        *(
            p
            for p in (ROOT / "gateway" / "xlat").rglob("*.py")
            if "offline" not in p.relative_to(ROOT / "gateway" / "xlat").parts
        ),
        # The appliance's cores; their IO adapters are agent.py, enrolled.py, arp_probe_io.py,
        # tunnel*.py, discovery/relay.py. (wan_filter.py builds its rules with
        # common/netlink/nft.py, whose table model and `nft` runner share a module.)
        ROOT / "appliance" / "lifecycle.py",
        ROOT / "appliance" / "backoff.py",
        ROOT / "appliance" / "arp_probe.py",
        ROOT / "appliance" / "lan.py",
        ROOT / "appliance" / "discovery" / "policy.py",
        ROOT / "appliance" / "discovery" / "gate.py",
        ROOT / "appliance" / "discovery" / "ssdp.py",
        ROOT / "appliance" / "discovery" / "nft_rules.py",
    }
)
IO_MODULES = (
    "pyroute2",
    "asyncio",
    "socket",
    "select",
    "selectors",
    "time",
    "threading",
    "subprocess",
    "ssl",
    "http",
    "urllib",
    "shutil",
    "ctypes",
    "concurrent",
    "aiohttp",
)
# zeroconf and dnspython are used as DNS message codecs only; their IO halves are banned.
IO_NAMES_FROM = {"zeroconf": {"Zeroconf", "ServiceBrowser", "ServiceInfo"}}
IO_SUBMODULES = ("zeroconf.asyncio", "dns.resolver", "dns.query", "dns.asyncquery")


def _io_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = {m for m in _imports(path) if m.split(".")[0] in IO_MODULES or m in IO_SUBMODULES}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in IO_NAMES_FROM:
            bad.update(
                f"{node.module}.{a.name}"
                for a in node.names
                if a.name in IO_NAMES_FROM[node.module]
            )
    return bad


def _module_path(name: str) -> Path | None:
    parts = name.split(".")[1:]
    for candidate in (
        ROOT.joinpath(*parts).with_suffix(".py"),
        ROOT.joinpath(*parts) / "__init__.py",
    ):
        if parts and candidate.is_file():
            return candidate
    return None


def _reachable_cjb_modules(path: Path) -> set[Path]:
    """Every cjb module `path` imports, transitively (a core that calls an IO adapter is
    no core)."""
    seen: set[Path] = set()
    todo = [path]
    while todo:
        current = todo.pop()
        for name in _imports(current):
            if not name.startswith("cjb."):
                continue
            target = _module_path(name)
            if target is not None and target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


@pytest.mark.parametrize("path", SANS_IO_CORES, ids=lambda p: str(p.relative_to(ROOT)))
def test_cores_are_sans_io(path: Path) -> None:
    bad = _io_imports(path)
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}: the core must stay sans-IO"
    for dep in _reachable_cjb_modules(path):
        via = _io_imports(dep)
        assert not via, (
            f"{path.relative_to(ROOT)} reaches {dep.relative_to(ROOT)}, which imports"
            f" {sorted(via)}: the core must stay sans-IO"
        )


def test_sans_io_check_covers_the_alg_and_appliance_cores() -> None:
    covered = {str(p.relative_to(ROOT)) for p in SANS_IO_CORES}
    assert "gateway/xlat/alg/mdns.py" in covered
    assert "appliance/lifecycle.py" in covered
    assert not any(c.startswith("gateway/xlat/offline/") for c in covered)


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
