"""The one way to write a file atomically, with its mode set from the first byte.

`atomic_write` creates a temporary file beside the target with the final mode (0600 unless
told otherwise: keys, inventories, images), fchmods it (the umask can only take bits away, and
an older temporary file may have others), writes, fsyncs, renames it over the target and
fsyncs the directory, so a reader or a crash sees the old file or the new one, never half, and
nobody ever sees the content under a wider mode. `atomic_output` is the same for a writer that
streams (tarfile). `owner` hands the file to a user and group (e.g. export/ files that the
data plane's group reads). `durable=False` skips the fsyncs, for status files in /run that are
rewritten every second (still atomic; only a power cut may lose the last one). `publish`
puts a file another process wrote (a tool's output) in place the same way.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

PRIVATE = 0o600


@contextlib.contextmanager
def atomic_output(
    path: Path,
    mode: int = PRIVATE,
    *,
    exclusive: bool = False,
    owner: tuple[int, int] | None = None,
    durable: bool = True,
) -> Iterator[BinaryIO]:
    """Yields a binary file; on a clean exit it replaces `path` (`exclusive`: refuses to when
    `path` exists). `owner` (uid, gid), with -1 for "unchanged", needs the right to chown."""
    if exclusive and path.exists():
        raise FileExistsError(f"{path} exists; refusing to overwrite it")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, *owner)
        with os.fdopen(fd, "wb", closefd=False) as f:
            yield f
            f.flush()
            if durable:
                os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    if exclusive:
        try:
            os.link(tmp, path)  # fails if `path` appeared meanwhile
        finally:
            tmp.unlink()
    else:
        os.replace(tmp, path)
    if durable:
        _fsync_dir(path.parent)


def atomic_write(
    path: Path,
    data: bytes | str,
    mode: int = PRIVATE,
    *,
    exclusive: bool = False,
    owner: tuple[int, int] | None = None,
    durable: bool = True,
) -> None:
    with atomic_output(path, mode, exclusive=exclusive, owner=owner, durable=durable) as f:
        f.write(data.encode() if isinstance(data, str) else data)


def publish(finished: Path, path: Path, mode: int = PRIVATE, *, durable: bool = True) -> None:
    """Atomically put `finished` (a file another process wrote beside `path`, e.g. a tool's
    output) in place as `path`, with `mode`: the same guarantees as `atomic_write` for
    content this process did not write itself."""
    os.chmod(finished, mode)
    if durable:
        fd = os.open(finished, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(finished, path)
    if durable:
        _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)  # the rename itself must survive a power cut
    finally:
        os.close(fd)
