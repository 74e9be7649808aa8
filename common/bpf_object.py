"""Find or build a compiled BPF object (the gateway's fast path, the VXLAN guard).

`make bpf` builds each object next to its source in a checkout. An installed package may
have a read-only source tree (systemd's ProtectSystem=strict), so the daemon also looks in
a cache directory it can write (its state directory) and, when no fresh object exists
anywhere, compiles one there with clang. Where neither works the caller falls back and
says why: the message names the object, the places looked at and the fix.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

INSTALL_HINT = "apt-get install -y --no-install-recommends clang llvm libbpf-dev, then `make bpf`"


class BpfBuildError(Exception):
    """No usable object and none could be built; the message says where and why."""


def clang_argv(source: Path, output: Path) -> list[str]:
    # -mcpu=v3: atomic fetch-and-add (the fast path's IPv4 ID counter).
    return [
        "clang", "-O2", "-g", "-target", "bpf", "-mcpu=v3",
        f"-I/usr/include/{os.uname().machine}-linux-gnu", "-Wall",
        "-c", str(source), "-o", str(output),
    ]  # fmt: skip


def _fresh(obj: Path, source: Path) -> bool:
    try:
        return obj.stat().st_mtime >= source.stat().st_mtime
    except OSError:
        return False


def compile_into(source: Path, out: Path) -> Path:
    """clang `source` into `out` through a temporary file and a rename, so a concurrent
    loader never opens half an object."""
    if shutil.which("clang") is None:
        raise BpfBuildError(f"{out} is missing and clang is not installed: {INSTALL_HINT}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        done = subprocess.run(
            clang_argv(source, Path(tmp)), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise BpfBuildError(f"clang failed building {out}:\n{done.stderr.strip()}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def locate(
    source: Path, *, override_env: str, cache_dirs: Sequence[Path] = (), build: bool = True
) -> Path:
    """The object for `source`: `$override_env` as given (never built), else a fresh one
    next to the source or in a cache dir, else one built by clang into the first of those
    places that can be written."""
    override = os.environ.get(override_env)
    if override:
        path = Path(override)
        if not path.exists():
            raise BpfBuildError(f"{path} ({override_env}) is missing")
        return path
    name = source.with_suffix("").with_suffix(".bpf.o").name
    places = [source.parent / name, *(d / name for d in cache_dirs)]
    for obj in places:
        if _fresh(obj, source):
            return obj
    if not build:
        raise BpfBuildError(f"no built {name} in {', '.join(str(p.parent) for p in places)}")
    failures = []
    for obj in places:
        try:
            return compile_into(source, obj)
        except OSError as exc:  # a read-only tree: try the next place
            failures.append(f"{obj.parent}: {exc.strerror or exc}")
    raise BpfBuildError(f"cannot write {name} in any of: {'; '.join(failures)}")
