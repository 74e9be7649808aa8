"""Notice changes to the tenant directory file by polling its stat stamp.

Polling (not inotify) because it works the same on every filesystem, in containers and across
the atomic rename the gateway uses; a stamp is (mtime_ns, size, inode), so a rename onto the
path is seen even within one mtime tick. Time is passed in: the caller owns the loop and calls
`poll(now)` at `next_deadline()`. A change that fails to parse keeps the last good directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from cjb.service.directory import MAX_FILE_BYTES, TenantDirectory, parse_directory
from cjb.service.errors import DirectoryError

DEFAULT_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class FileStamp:
    mtime_ns: int
    size: int
    inode: int


def stat_stamp(path: str) -> FileStamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileStamp(st.st_mtime_ns, st.st_size, st.st_ino)


def read_bounded(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise DirectoryError(f"{path}: cannot read: {exc.strerror}") from None


@dataclass(frozen=True, slots=True)
class Unchanged:
    pass


@dataclass(frozen=True, slots=True)
class Reloaded:
    directory: TenantDirectory


@dataclass(frozen=True, slots=True)
class ReloadFailed:
    """The file changed (or vanished) but is not usable; the previous directory stays."""

    message: str


PollOutcome = Unchanged | Reloaded | ReloadFailed


class DirectoryWatcher:
    def __init__(
        self,
        path: str,
        now: float,
        *,
        interval: float = DEFAULT_INTERVAL,
        stat: Callable[[str], FileStamp | None] = stat_stamp,
        read: Callable[[str], bytes] = read_bounded,
    ) -> None:
        self.path = path
        self._interval = interval
        self._stat = stat
        self._read = read
        self._stamp: FileStamp | None = None
        self._next = now
        self.directory: TenantDirectory | None = None
        self.last_error: str | None = None

    def load(self, now: float) -> TenantDirectory:
        """First load: errors raise (a service should not start on a bad directory)."""
        stamp = self._stat(self.path)
        if stamp is None:
            raise DirectoryError(f"{self.path}: no such file or not accessible")
        directory = parse_directory(self._read(self.path), self.path)
        self._stamp, self.directory, self.last_error = stamp, directory, None
        self._next = now + self._interval
        return directory

    def next_deadline(self) -> float:
        return self._next

    def poll(self, now: float) -> PollOutcome:
        if now < self._next:
            return Unchanged()
        self._next = now + self._interval
        stamp = self._stat(self.path)
        if stamp == self._stamp:
            return Unchanged()
        self._stamp = stamp
        if stamp is None:
            return self._failed(f"{self.path}: file disappeared; keeping the previous directory")
        try:
            directory = parse_directory(self._read(self.path), self.path)
        except DirectoryError as exc:
            return self._failed(f"{exc}; keeping the previous directory")
        self.directory, self.last_error = directory, None
        return Reloaded(directory)

    def _failed(self, message: str) -> ReloadFailed:
        self.last_error = message
        return ReloadFailed(message)
