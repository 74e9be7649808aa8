#!/usr/bin/env python3
"""`make deb`: build cjb-gateway and cjb-appliance .debs from a checkout.

Each package is a staged tree packed by `dpkg-deb --build` (no debhelper: the tree is all
there is to it, every file and permission is decided here, and the result is the same on
any Debian 12 machine with dpkg). What goes in:

- /opt/cjb: an isolated Python environment (Debian 12's own pydantic, zeroconf, pyroute2
  and aiohttp are older than CJB needs), made here with /usr/bin/python3 -m venv, CJB's wheel
  and its dependencies, then re-pointed from the staging path to /opt/cjb;
- the systemd units, sysusers.d and tmpfiles.d files exactly as the wheel ships them
  (cjb.gateway/systemd, image-build/overlay), and the default configuration as a conffile;
- for the gateway, the compiled tc-eBPF object (clang, here), next to its source.

Run with the Python whose pip should fetch the dependencies (the checkout's venv):
    .venv/bin/python tools/deb/build.py --out dist/deb [--version 0.1.1] [--only gateway]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from email.utils import formatdate
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VENV = "/opt/cjb"
SYSTEM_PYTHON = "/usr/bin/python3"
MAINTAINER = "CJB maintainers <cjb@example.org>"
DEB_REVISION = "1"

# Debian 12's Python; the venv's compiled wheels are for this ABI, so the upper bound is real.
PYTHON_DEPENDS = "python3 (>= 3.11), python3 (<< 3.12)"
# The bundled extension modules are manylinux wheels pip chose for Debian 12's glibc.
LIBC_DEPENDS = "libc6 (>= 2.36)"
# What both packages run: systemd units, nft, ip, and a WireGuard implementation.
RUNTIME_DEPENDS = (
    PYTHON_DEPENDS,
    LIBC_DEPENDS,
    "systemd",
    "nftables",
    "iproute2",
    "wireguard-go | wireguard-tools",
)
PACKAGES = {
    "gateway": {
        "name": "cjb-gateway",
        "extras": "gateway",
        "depends": [*RUNTIME_DEPENDS, "libbpf1"],  # libbpf: the tc-eBPF fast path
        "conflicts": "cjb-appliance",
        "summary": "Cloud Junction Box gateway: enrollment API and L2 multi-tenant data plane",
        "description": (
            "The CJB gateway terminates the appliances' WireGuard tunnels, translates each\n"
            "tenant's IPv4 to IPv6 link-local addresses (RFC 7915) and delivers every tenant\n"
            "on its own interface of one service host. This package holds the HTTPS\n"
            "enrollment API and the data plane as two sandboxed systemd units, with their\n"
            "own Python environment in /opt/cjb. Run `cjb gateway init` once after install."
        ),
    },
    "appliance": {
        "name": "cjb-appliance",
        "extras": "appliance",
        "depends": [*RUNTIME_DEPENDS],
        "conflicts": "cjb-gateway",
        "summary": "Cloud Junction Box appliance agent (what the appliance image runs)",
        "description": (
            "The agent on a CJB appliance: it enrolls with the gateway over HTTPS, opens the\n"
            "WireGuard tunnel carrying the LAN's VXLAN segment, and relays discovery. The\n"
            "appliance image installs the same files: the agent in /opt/cjb, its systemd\n"
            "unit and the systemd-networkd configuration of the LAN bridge."
        ),
    },
}


def run(argv: list[str], **kw: object) -> None:
    subprocess.run(argv, check=True, **kw)  # type: ignore[call-overload]


def project_version(source: Path) -> str:
    return str(tomllib.loads((source / "pyproject.toml").read_text())["project"]["version"])


def source_date_epoch(source: Path) -> int:
    if "SOURCE_DATE_EPOCH" in os.environ:
        return int(os.environ["SOURCE_DATE_EPOCH"])
    done = subprocess.run(
        ["git", "-C", str(source), "log", "-1", "--format=%ct"], capture_output=True, text=True
    )
    return int(done.stdout.strip()) if done.returncode == 0 and done.stdout.strip() else 0


def build_wheel(source: Path, out: Path) -> Path:
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out),
         str(source)], stderr=subprocess.DEVNULL)  # fmt: skip
    (wheel,) = out.glob("cjb-*.whl")
    return wheel


def stage_venv(stage: Path, wheel: Path, extras: str) -> Path:
    """The venv at STAGE/opt/cjb, then every text mention of that path made /opt/cjb."""
    venv = stage / VENV.lstrip("/")
    run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)])
    run([sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install",
         "--quiet", "--no-compile", "--no-warn-script-location", "--disable-pip-version-check",
         f"{wheel}[{extras}]"])  # fmt: skip
    staged = str(venv).encode()
    for path in venv.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if staged not in data:
            continue
        if b"\0" in data:
            sys.exit(f"{path}: a binary file names the staging path; cannot relocate it")
        path.write_bytes(data.replace(staged, VENV.encode()))
    for cache in list(venv.rglob("__pycache__")):
        shutil.rmtree(cache)
    # As dh_strip does: debug symbols out of the bundled extension modules.
    shared = [str(p) for p in venv.rglob("*.so") if not p.is_symlink()]
    if shared:
        run(["strip", "--strip-unneeded", "--remove-section=.comment", "--remove-section=.note",
             *shared])  # fmt: skip
    return venv


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def compile_bpf(venv: Path) -> None:
    """The kernel fast path's object, next to its source (where `object_path()` looks),
    with the source's mtime so `build_object()` sees it current and never tries to rebuild."""
    bpf = site_packages(venv) / "cjb/gateway/dataplane/bpf"
    source, obj = bpf / "xlat.bpf.c", bpf / "xlat.bpf.o"
    arch = os.uname().machine
    run(["clang", "-O2", "-g", "-target", "bpf", "-mcpu=v3", f"-I/usr/include/{arch}-linux-gnu",
         "-Wall", "-c", str(source), "-o", str(obj)])  # fmt: skip


def install_file(src: Path, dest: Path, mode: int = 0o644) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    dest.chmod(mode)


# tmpfiles.d(5) types that only create what is missing (and set the mode and owner of that
# one path): the others remove, empty or recursively change what exists, which a package
# must never do to a state directory.
TMPFILES_TYPES = set("dfLvpcbq")


def check_tmpfiles(conf: Path) -> None:
    for n, line in enumerate(conf.read_text().splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            kind = line.split()[0].rstrip("+!-=~^")
            if kind not in TMPFILES_TYPES:
                sys.exit(
                    f"{conf}:{n}: tmpfiles type {kind!r} may change an existing state "
                    f"directory; the package allows only {''.join(sorted(TMPFILES_TYPES))}"
                )


def stage_gateway(stage: Path, data: Path) -> list[str]:
    """Units, sysusers.d, tmpfiles.d and gateway.json from the wheel's cjb/gateway/systemd.
    Returns the conffiles."""
    systemd = data / "gateway/systemd"
    for conf in systemd.glob("*.tmpfiles.conf"):
        check_tmpfiles(conf)
    for unit in sorted(systemd.glob("*.service")):
        install_file(unit, stage / "lib/systemd/system" / unit.name)
    for kind in ("sysusers", "tmpfiles"):
        for conf in sorted(systemd.glob(f"*.{kind}.conf")):
            name = conf.name.removesuffix(f".{kind}.conf") + ".conf"
            install_file(conf, stage / f"usr/lib/{kind}.d" / name)
    install_file(systemd / "gateway.json", stage / "etc/cjb/gateway.json")
    return ["/etc/cjb/gateway.json"]


def stage_appliance(stage: Path, data: Path) -> list[str]:
    """The image's overlay: its units into /lib/systemd/system, the rest where the image
    has it (configuration under /etc, so conffiles)."""
    overlay = data / "image_build/overlay"
    conffiles = []
    for src in sorted(p for p in overlay.rglob("*") if p.is_file()):
        rel = src.relative_to(overlay)
        if rel.parent == Path("etc/systemd/system") and rel.suffix == ".service":
            install_file(src, stage / "lib/systemd/system" / rel.name)
        else:
            install_file(src, stage / rel)
            conffiles.append(f"/{rel}")
    return conffiles


def unit_names(stage: Path) -> list[str]:
    return sorted(p.name for p in (stage / "lib/systemd/system").glob("*.service"))


def state_directories(stage: Path) -> list[str]:
    """Where the registry of a newer CJB may be: each unit's StateDirectory= under /var/lib and
    each `--state-dir` its ExecStart= names (the gateway's units use the latter: tmpfiles.d
    gives the state directory's parts their owners, which a StateDirectory= would override)."""
    found = set()
    for unit in (stage / "lib/systemd/system").glob("*.service"):
        for line in unit.read_text().splitlines():
            if line.startswith("StateDirectory="):
                found.update(f"/var/lib/{d}" for d in line.split("=", 1)[1].split())
            elif line.startswith("ExecStart="):
                found.update(re.findall(r"--state-dir[= ](\S+)", line))
    return sorted(found)


def schema_version(venv: Path) -> int:
    code = "from cjb.gateway.control.migrations import newest_version; print(newest_version())"
    done = subprocess.run([str(venv / "bin/python"), "-I", "-B", "-c", code], capture_output=True,
                          text=True, check=True)  # fmt: skip
    return int(done.stdout)


def licenses(venv: Path) -> str:
    """One paragraph per bundled distribution, from its metadata."""
    code = (
        "import json\nfrom importlib import metadata\n"
        "print(json.dumps(sorted((d.metadata['Name'], d.version, d.metadata.get("
        "'License-Expression') or (d.metadata.get('License') or '').split('\\n')[0] or ', '.join("
        "c.split(' :: ')[-1] for c in d.metadata.get_all('Classifier') or [] "
        "if c.startswith('License ::')) or 'see its metadata') for d in metadata.distributions())))"
    )
    done = subprocess.run([str(venv / "bin/python"), "-I", "-B", "-c", code], capture_output=True,
                          text=True, check=True)  # fmt: skip
    rows = json.loads(done.stdout)
    return "\n".join(f" {name} {version}: {lic}" for name, version, lic in rows)


def write_docs(stage: Path, name: str, version: str, sde: int, venv: Path) -> None:
    doc = stage / "usr/share/doc" / name
    doc.mkdir(parents=True, exist_ok=True)
    (doc / "copyright").write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        f"Upstream-Name: cjb\n\nFiles: *\nCopyright: {time.gmtime(sde).tm_year} the CJB authors\n"
        "License: other\n"
        " CJB itself is distributed by its authors under the terms stated with its source.\n"
        " The Python environment in /opt/cjb bundles these distributions (name version:\n"
        " license, from each one's metadata; the full texts are in their dist-info\n"
        " folders under /opt/cjb/lib):\n"
        f"{licenses(venv)}\n"
    )
    entry = (
        f"{name} ({version}) unstable; urgency=medium\n\n"
        f"  * Package of CJB {version.rsplit('-', 1)[0]}.\n\n"
        f" -- {MAINTAINER}  {formatdate(sde, usegmt=False, localtime=False)}\n"
    )
    entry = entry.replace("-0000", "+0000")
    with (
        (doc / "changelog.Debian.gz").open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=sde, filename="") as gz,
    ):
        gz.write(entry.encode())


def maintainer_scripts(stage: Path, kind: str, units: list[str], states: list[str],
                       schema: int) -> None:  # fmt: skip
    debian = stage / "DEBIAN"
    template = (HERE / "maintscript.sh").read_text()
    for script in ("preinst", "postinst", "prerm", "postrm"):
        text = (
            template.replace("@SCRIPT@", script)
            .replace("@UNITS@", " ".join(units))
            .replace("@STATE_DIRS@", " ".join(states))
            .replace("@SCHEMA@", str(schema))
            .replace(
                "@SYSUSERS@",
                " ".join(
                    sorted(
                        f"/{p.relative_to(stage)}" for p in stage.glob("usr/lib/sysusers.d/*.conf")
                    )
                ),
            )
            .replace(
                "@TMPFILES@",
                " ".join(
                    sorted(
                        f"/{p.relative_to(stage)}" for p in stage.glob("usr/lib/tmpfiles.d/*.conf")
                    )
                ),
            )
            .replace("@ENABLE@", "yes" if kind == "appliance" else "no")
            .replace("@VENV@", VENV)
        )
        path = debian / script
        path.write_text(text)
        path.chmod(0o755)


def normalise(stage: Path, sde: int) -> None:
    """Root-owned (dpkg-deb --root-owner-group), 0755/0644, mtimes clamped to SOURCE_DATE_EPOCH."""
    for path in sorted(stage.rglob("*"), reverse=True):
        if path.is_symlink():
            os.utime(path, (sde, sde), follow_symlinks=False)
            continue
        if path.is_dir():
            path.chmod(0o755)
        elif path.parent.name != "DEBIAN":
            executable = path.stat().st_mode & 0o111 and ".so" not in path.suffixes
            path.chmod(0o755 if executable else 0o644)
        os.utime(path, (sde, sde))


def md5sums(stage: Path) -> str:
    lines = []
    for path in sorted(stage.rglob("*")):
        rel = path.relative_to(stage)
        if rel.parts[0] == "DEBIAN" or path.is_symlink() or not path.is_file():
            continue
        lines.append(f"{hashlib.md5(path.read_bytes()).hexdigest()}  {rel}")  # noqa: S324 (dpkg's format)
    return "\n".join(lines) + "\n"


def installed_size_kib(stage: Path) -> int:
    total = 0
    for path in stage.rglob("*"):
        if "DEBIAN" in path.relative_to(stage).parts[:1]:
            continue
        total += 1 if path.is_dir() or path.is_symlink() else (path.stat().st_size + 1023) // 1024
    return total


def build_package(kind: str, source: Path, wheel: Path, version: str, out: Path,
                  work: Path, sde: int) -> Path:  # fmt: skip
    spec = PACKAGES[kind]
    name = str(spec["name"])
    stage = work / name
    shutil.rmtree(stage, ignore_errors=True)
    venv = stage_venv(stage, wheel, str(spec["extras"]))
    data = site_packages(venv) / "cjb"
    if kind == "gateway":
        compile_bpf(venv)
        conffiles = stage_gateway(stage, data)
    else:
        conffiles = stage_appliance(stage, data)
    (stage / "usr/bin").mkdir(parents=True, exist_ok=True)
    (stage / "usr/bin/cjb").symlink_to(f"{VENV}/bin/cjb")
    overrides = HERE / f"{name}.lintian-overrides"
    install_file(overrides, stage / "usr/share/lintian/overrides" / name)
    write_docs(stage, name, version, sde, venv)
    debian = stage / "DEBIAN"
    debian.mkdir()
    units = unit_names(stage)
    maintainer_scripts(stage, kind, units, state_directories(stage), schema_version(venv))
    (debian / "conffiles").write_text("".join(f"{c}\n" for c in conffiles))
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip
    control = {
        "Package": name,
        "Version": version,
        "Architecture": arch,
        "Maintainer": MAINTAINER,
        "Installed-Size": str(installed_size_kib(stage)),
        "Depends": ", ".join(spec["depends"]),  # type: ignore[arg-type]
        "Conflicts": str(spec["conflicts"]),
        "Section": "net",
        "Priority": "optional",
        "Homepage": "https://example.org/cjb",
        "Description": f"{spec['summary']}\n"
        + "\n".join(f" {ln}" if ln else " ." for ln in str(spec["description"]).splitlines()),
    }
    (debian / "control").write_text("".join(f"{k}: {v}\n" for k, v in control.items()))
    (debian / "md5sums").write_text(md5sums(stage))
    normalise(stage, sde)
    out.mkdir(parents=True, exist_ok=True)
    deb = out / f"{name}_{version}_{arch}.deb"
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(sde)}
    run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(stage), str(deb)], env=env,
        stdout=subprocess.DEVNULL)  # fmt: skip
    return deb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, default=REPO, help="the checkout (default: this one)")
    ap.add_argument("--out", type=Path, default=REPO / "dist/deb")
    ap.add_argument("--only", choices=sorted(PACKAGES), action="append")
    args = ap.parse_args()
    source = args.source.resolve()
    version = f"{project_version(source)}-{DEB_REVISION}"
    sde = source_date_epoch(source)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cjb-deb-") as tmp:
        work = Path(tmp)
        wheel = build_wheel(source, work / "wheel")
        for kind in args.only or sorted(PACKAGES, reverse=True):
            deb = build_package(kind, source, wheel, version, args.out.resolve(), work, sde)
            print(f"{deb} ({deb.stat().st_size // 1024} KiB)")
    print(f"built in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
