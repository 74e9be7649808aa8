"""The CJB wheel the image installs, from one of three places:

- a wheel the operator names (`cjb image build --agent-wheel PATH`);
- a checkout: `pip wheel --no-deps` of it (rootfs.build_wheel);
- otherwise the installed distribution, repacked as a wheel from the files its RECORD lists
  (a plain `pip install cjb` has no source tree to build from).

The repacked wheel holds what the installed one held (code, package data, metadata) and a new
RECORD with each file's hash (the wheel format, PEP 427 / the binary distribution format spec).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import zipfile
from importlib import metadata
from pathlib import Path

from cjb.appliance.image import ImageError

# Written by the installer, not part of a wheel.
_INSTALLER_FILES = {"INSTALLER", "REQUESTED", "RECORD", "direct_url.json"}
_ZIP_EPOCH = 315532800  # 1980-01-01: the oldest time a zip entry can hold


def is_checkout(repo: Path) -> bool:
    return (repo / "pyproject.toml").is_file() and (repo / "image-build").is_dir()


def check_wheel(path: Path) -> Path:
    if path.suffix != ".whl" or not path.name.startswith("cjb-"):
        raise ImageError(f"--agent-wheel {path}: expected a cjb-VERSION-...whl file")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (OSError, zipfile.BadZipFile) as exc:
        raise ImageError(f"--agent-wheel {path}: not a wheel ({exc})") from None
    if "cjb/appliance/agent.py" not in names:
        raise ImageError(f"--agent-wheel {path}: no cjb/appliance/agent.py in it; not a CJB wheel")
    return path


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


def wheel_from_installed(out: Path, source_date_epoch: int, name: str = "cjb") -> Path:
    """Repack the installed distribution `name` into OUT/<name>-<version>-py3-none-any.whl;
    entries sorted and dated SOURCE_DATE_EPOCH, so the same install gives the same bytes."""
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise ImageError(f"{name} is not installed: pass --agent-wheel PATH") from None
    direct = dist.read_text("direct_url.json")
    if direct and json.loads(direct).get("dir_info", {}).get("editable"):
        raise ImageError(
            f"{name} is an editable install of a checkout that is gone: pass --agent-wheel PATH"
        )
    files = dist.files or []
    dist_info = f"{name}-{dist.version}.dist-info"
    chosen: list[tuple[str, Path]] = []
    for entry in files:
        rel = entry.as_posix()
        if rel.startswith("../") or "__pycache__" in entry.parts or rel.endswith(".pyc"):
            continue  # scripts (made from entry_points.txt on install) and byte code
        if entry.parts[0].endswith(".dist-info") and entry.name in _INSTALLER_FILES:
            continue
        where = Path(str(dist.locate_file(entry)))
        if not where.is_file():
            raise ImageError(f"the installed {name} lacks {where}: reinstall it")
        chosen.append((rel, where))
    if not any(rel == "cjb/appliance/agent.py" for rel, _ in chosen):
        raise ImageError(f"the installed {name} has no cjb/appliance/agent.py: reinstall it")
    when = max(source_date_epoch, _ZIP_EPOCH)
    date_time = time.gmtime(when)[:6]
    out.mkdir(parents=True, exist_ok=True)
    wheel = out / f"{name}-{dist.version}-py3-none-any.whl"
    record: list[str] = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, where in sorted(chosen):
            data = where.read_bytes()
            info = zipfile.ZipInfo(rel, date_time)
            info.external_attr = (where.stat().st_mode & 0o777 | 0o100000) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
            record.append(f"{rel},{_record_hash(data)},{len(data)}")
        record.append(f"{dist_info}/RECORD,,")
        info = zipfile.ZipInfo(f"{dist_info}/RECORD", date_time)
        info.external_attr = 0o100644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, "\n".join(record) + "\n")
    return wheel
