"""The `wireguard-go` backend: one process per interface, configured over its UAPI socket.

The process is started from a thread that entered the namespace with setns (so its tun
device is created there; not `ip netns exec`, which remounts /sys), in its own session, so
it outlives the daemon that started it: a restarted gateway or agent adopts the running
interface instead of tearing the tunnel down. The UAPI socket lives in SOCKET_DIR, which is
shared by all namespaces: interface names must be unique on the machine.

Supervision is by reconciliation: `exists()` is false once the process died (its socket
refuses connections), and the next `ensure` starts a new one.

Starting is racy in one place, handled here: wireguard-go binds its socket before it listens,
and a connect in between is refused. A refused socket is therefore only a leftover when no
`wireguard-go IFNAME` process is alive; deleting it under a starting process would leave that
process running unreachable, holding the tun name, and the next start would fail on the name
("name in use"). For the same reason a start that times out stops its process.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO

from cjb.common.netlink import netns
from cjb.common.wireguard.model import DeviceStatus, WireGuardError
from cjb.common.wireguard.plan import SetRequest
from cjb.common.wireguard.uapi import GET_REQUEST, parse_get, render_set, response_errno

SOCKET_DIR = Path("/var/run/wireguard")
START_TIMEOUT = 5.0
STOP_TIMEOUT = 3.0
IO_TIMEOUT = 5.0
MAX_RESPONSE = 1 << 20  # a gateway with thousands of peers stays far below this


class UserspaceBackend:
    name = "wireguard-go"

    def __init__(self, binary: str | None = None, socket_dir: Path = SOCKET_DIR) -> None:
        found = binary or shutil.which("wireguard-go")
        if found is None:
            raise WireGuardError(
                "wireguard-go not found and no WireGuard kernel module: "
                "apt-get install -y --no-install-recommends wireguard-go wireguard-tools"
            )
        self.binary = found
        self.socket_dir = socket_dir
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    def socket_path(self, ifname: str) -> Path:
        return self.socket_dir / f"{ifname}.sock"

    def _reap(self) -> None:
        for name, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[name]

    def exists(self, ns: str | None, ifname: str) -> bool:
        self._reap()
        path = self.socket_path(ifname)
        if not path.exists():
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(IO_TIMEOUT)
                s.connect(str(path))
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                if not _pids_of(self.binary, ifname):
                    # The process died without cleaning up: the file is a leftover.
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                return False
            raise WireGuardError(f"{ifname}: UAPI socket {path}: {exc.strerror}") from exc
        return True

    def create(self, ns: str | None, ifname: str, log_file: Path | None = None) -> None:
        running = _pids_of(self.binary, ifname)
        if running:
            # A previous start still coming up (or wedged): a second process would only
            # fail on the tun name. Give it the start timeout, then stop it and start anew.
            if self._wait_for_socket(ns, ifname, None):
                return
            self._stop_pids(running)
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "WG_PROCESS_FOREGROUND": "1",
            "LOG_LEVEL": "error",
            # wireguard-go refuses to start on kernels that could have the module, unless told.
            "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1",
        }
        out: int | IO[bytes] = subprocess.DEVNULL
        handle: IO[bytes] | None = None
        if log_file is not None:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            handle = open(log_file, "ab")  # noqa: SIM115 (closed below, after the fork)
            out = handle
        try:
            with netns(ns):
                proc = subprocess.Popen(
                    [self.binary, ifname],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    env=env,
                    start_new_session=True,
                )
        finally:
            if handle is not None:
                handle.close()
        self._children[ifname] = proc
        if self._wait_for_socket(ns, ifname, proc):
            return
        if proc.poll() is not None:
            raise WireGuardError(
                f"{ifname}: wireguard-go exited with {proc.returncode}{_log_hint(log_file)}; "
                "is the name in use or /dev/net/tun missing?"
            )
        # Stopped, so that the tun name is free for the next attempt.
        self._stop_pids([proc.pid])
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_TIMEOUT)
        self._children.pop(ifname, None)
        raise WireGuardError(
            f"{ifname}: wireguard-go did not open {self.socket_path(ifname)} within"
            f" {START_TIMEOUT:.0f} s{_log_hint(log_file)}"
        )

    def _wait_for_socket(
        self, ns: str | None, ifname: str, proc: subprocess.Popen[bytes] | None
    ) -> bool:
        """True once `ifname`'s socket answers; False when `proc` exited or time ran out."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                return False
            if self.exists(ns, ifname):
                return True
            time.sleep(0.02)
        return False

    def _stop_pids(self, pids: list[int]) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            self._reap()  # our own children become zombies until waited for
            time.sleep(0.02)

    def delete(self, ns: str | None, ifname: str) -> None:
        """Delete the tun link (wireguard-go exits when it goes), then make sure it did."""
        from cjb.common.netlink.real import RealKernel

        with contextlib.suppress(Exception), RealKernel() as kernel:
            kernel.del_link(ns, ifname)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and self.socket_path(ifname).exists():
            time.sleep(0.02)
        for pid in _pids_of(self.binary, ifname):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        proc = self._children.pop(ifname, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_TIMEOUT)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path(ifname).unlink()

    def _call(self, ifname: str, request: bytes) -> str:
        path = self.socket_path(ifname)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(IO_TIMEOUT)
                s.connect(str(path))
                s.sendall(request)
                data = b""
                # A response ends with "errno=N" and an empty line.
                while not (data.endswith(b"\n\n") and b"errno=" in data):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                    if len(data) > MAX_RESPONSE:
                        raise WireGuardError(f"{ifname}: UAPI response over {MAX_RESPONSE} bytes")
        except OSError as exc:
            raise WireGuardError(
                f"{ifname}: UAPI socket {path}: {exc.strerror or exc} (is the interface up?)"
            ) from exc
        return data.decode("utf-8", "replace")

    def get(self, ns: str | None, ifname: str) -> DeviceStatus:
        return parse_get(self._call(ifname, GET_REQUEST))

    def set(self, ns: str | None, ifname: str, request: SetRequest) -> None:
        code = response_errno(self._call(ifname, render_set(request)))
        if code != 0:
            # The request is not echoed: it may hold a private key.
            raise WireGuardError(f"{ifname}: UAPI set failed: errno {code} ({os.strerror(code)})")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().split(b") ", 1)[1][:1] != b"Z"
    except (OSError, IndexError):
        return False


def _log_hint(log_file: Path | None) -> str:
    """Where wireguard-go's own log is, and its last lines (it logs errors only)."""
    if log_file is None:
        return ""
    try:
        tail = log_file.read_text(errors="replace")[-800:].strip()
    except OSError:
        tail = ""
    return f" (its log: {log_file}{': ' + tail if tail else ''})"


def _pids_of(binary: str, ifname: str) -> list[int]:
    """Processes running exactly `wireguard-go IFNAME` (ours: the name has our run id)."""
    wanted = [os.path.basename(binary).encode(), ifname.encode()]
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().rstrip(b"\0").split(b"\0")
        except OSError:
            continue
        if len(argv) == 2 and os.path.basename(argv[0]) == wanted[0] and argv[1] == wanted[1]:
            found.append(int(entry))
    return found
