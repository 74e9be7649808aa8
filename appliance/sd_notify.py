"""systemd's notify protocol (sd_notify(3)): READY=1 once the agent runs its loop, WATCHDOG=1
from every pass of the loop, so a hung agent (a deadlock, a stuck netlink call, SIGSTOP) is
killed and restarted by systemd after the unit's `WatchdogSec=` (cjb-appliance.service).

The protocol is one datagram of "KEY=VALUE" lines to the AF_UNIX socket named in
$NOTIFY_SOCKET ('@' = Linux abstract namespace); a dozen lines here rather than a dependency
(systemd-python needs libsystemd headers to build, and the agent's venv is built offline for
two architectures). Outside systemd (tests, the lab) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping


def socket_address(value: str) -> str | bytes | None:
    """$NOTIFY_SOCKET as an address for sendto: a path, or abstract ('@name' -> b'\\0name')."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock addresses and the like: not ours to use


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between pings: half of WatchdogSec, as sd_watchdog_enabled(3) advises; None when
    the watchdog is off or meant for another process (WATCHDOG_PID)."""
    usec = env.get("WATCHDOG_USEC", "")
    owner = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (owner and owner != str(pid)):
        return None
    return int(usec) / 2_000_000


class Notifier:
    """READY=1 once, WATCHDOG=1 at most every `interval` seconds; errors are ignored (a
    missing notify socket must never stop the agent)."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        env = os.environ if env is None else env
        self.address = socket_address(env.get("NOTIFY_SOCKET", ""))
        self.interval = watchdog_interval(env, os.getpid()) if self.address else None
        self.clock = clock
        self._last_ping = float("-inf")
        self._ready = False
        self.sent: list[str] = []  # what went out (status and tests)

    def _send(self, message: str) -> None:
        if self.address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(message.encode(), self.address)
            self.sent.append(message)
        except OSError:
            pass

    def ready(self, status: str = "") -> None:
        if not self._ready:
            self._ready = True
            self._send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def alive(self) -> None:
        """Called from every pass of the agent's loop."""
        if self.interval is None:
            return
        now = self.clock()
        if now - self._last_ping >= self.interval / 2:  # twice per interval: slack for a slow tick
            self._last_ping = now
            self._send("WATCHDOG=1")

    def next_ping(self) -> float | None:
        """When the loop must wake next to keep the watchdog fed (monotonic seconds)."""
        return None if self.interval is None else self._last_ping + self.interval / 2
