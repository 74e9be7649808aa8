"""common/private_file: the one atomic writer, and `publish` for a tool's finished output."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cjb.common.private_file import atomic_write, publish


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_write_replaces_with_the_mode_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    target.write_text("old")
    os.chmod(target, 0o644)
    atomic_write(target, "new")
    assert target.read_text() == "new"
    assert _mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_atomic_write_failure_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("old")
    with pytest.raises(TypeError):
        atomic_write(target, 42)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_publish_puts_another_writers_file_in_place_with_the_mode(tmp_path: Path) -> None:
    partial = tmp_path / "base.partial"
    partial.write_bytes(b"tarball")
    os.chmod(partial, 0o600)
    target = tmp_path / "base.tar"
    publish(partial, target, 0o644)
    assert target.read_bytes() == b"tarball"
    assert _mode(target) == 0o644
    assert not partial.exists()
