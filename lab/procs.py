"""Start processes inside lab namespaces, and find and kill every process in them.

Processes are started with setns (forked from a thread that entered the namespace), each
in its own session, so `down` can signal whole process groups.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from cjb.common.netlink import netns


def spawn(ns: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Start `argv` in `ns`; `env` entries are added to this process's environment."""
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **env} if env else None
    with open(log, "ab") as out, netns(ns):
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            env=full_env,
        )
    return proc.pid


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except FileNotFoundError:
        return False


def pids_in_namespaces(inodes: set[int]) -> set[int]:
    """Every process whose network namespace is one of `inodes`."""
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino in inodes:
                found.add(int(entry))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return found


def kill_all(pids: set[int], grace: float = 2.0) -> set[int]:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL; returns what is still alive."""
    me = os.getpid()
    pids = {p for p in pids if p != me}
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        _reap()
        time.sleep(0.05)
    for pid in pids:
        if alive(pid):
            _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        _reap()
        time.sleep(0.05)
    return {p for p in pids if alive(p)}


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)  # our children lead their own session
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass
