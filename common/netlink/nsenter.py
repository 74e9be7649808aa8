"""Enter a network namespace with setns(2) on the calling thread.

Not `ip netns exec`: it remounts /sys, so pinned BPF maps and /sys/class/net would differ
between our processes (docs/platform.md). Children forked inside `netns()` inherit the namespace.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from cjb.common.netlink.kernel import NetlinkError

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 0x2

_libc = ctypes.CDLL(None, use_errno=True)
_run_dir_shared = False


def netns_path(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def setns_fd(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetlinkError(f"setns: {os.strerror(err)} (are you root?)")


def enter(name: str) -> None:
    """Move this thread into namespace `name` for good (used right before exec)."""
    try:
        fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetlinkError(f"network namespace {name!r} does not exist") from None
    try:
        setns_fd(fd)
    finally:
        os.close(fd)


@contextmanager
def netns(name: str | None) -> Iterator[None]:
    """Run the body in namespace `name` (None: stay where we are), then come back."""
    if name is None:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter(name)
        try:
            yield
        finally:
            setns_fd(home)
    finally:
        os.close(home)


def netns_inode(name: str) -> int | None:
    try:
        return os.stat(netns_path(name)).st_ino
    except FileNotFoundError:
        return None


def _shared_run_dir() -> None:
    """Make /run/netns a shared mount point of its own, as `ip netns add` does.

    If it is a plain directory when our namespaces are mounted in it, a later `ip netns add`
    bind-mounts /run/netns over itself: each of our mounts then exists twice, the original
    hidden under the new mount, and `remove_netns` can only reach the visible copy (the
    name stays, busy, and the namespace lives on). Done first, `ip` finds the mount point.
    """
    global _run_dir_shared
    if _run_dir_shared:  # once per process: the flag change walks every mount below it
        return
    run_dir = NETNS_RUN_DIR.encode()
    if _libc.mount(b"none", run_dir, None, MS_SHARED | MS_REC, None) == 0:
        _run_dir_shared = True
        return
    if ctypes.get_errno() != errno.EINVAL:  # EINVAL: not a mount point yet
        raise NetlinkError(f"make {NETNS_RUN_DIR} shared: {os.strerror(ctypes.get_errno())}")
    if _libc.mount(run_dir, run_dir, None, MS_BIND | MS_REC, None) != 0:
        raise NetlinkError(f"bind-mount {NETNS_RUN_DIR}: {os.strerror(ctypes.get_errno())}")
    if _libc.mount(b"none", run_dir, None, MS_SHARED | MS_REC, None) != 0:
        raise NetlinkError(f"make {NETNS_RUN_DIR} shared: {os.strerror(ctypes.get_errno())}")
    _run_dir_shared = True


def create_netns(name: str) -> None:
    """Create a named namespace like `ip netns add`, without forking.

    A short-lived thread unshares its network namespace and bind-mounts it on
    /run/netns/NAME; the mount keeps the namespace alive after the thread ends. (pyroute2's
    `netns.create` forks a child that inherits our signal handlers; we avoid that.)
    """
    os.makedirs(NETNS_RUN_DIR, exist_ok=True)
    _shared_run_dir()
    path = netns_path(name)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
    os.close(fd)
    errors: list[str] = []

    def body() -> None:
        if _libc.unshare(CLONE_NEWNET) != 0:
            errors.append(f"unshare: {os.strerror(ctypes.get_errno())}")
            return
        src = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
        if _libc.mount(src, path.encode(), None, MS_BIND, None) != 0:
            errors.append(f"mount {path}: {os.strerror(ctypes.get_errno())}")

    thread = threading.Thread(target=body, name=f"netns-create-{name}")
    thread.start()
    thread.join()
    if errors:
        os.unlink(path)
        raise NetlinkError(f"cannot create network namespace {name!r}: {errors[0]} (root?)")


def remove_netns(name: str) -> None:
    path = netns_path(name)
    _libc.umount2(path.encode(), MNT_DETACH)
    with suppress(FileNotFoundError):
        os.unlink(path)
