"""The agent's sd_notify client against a real AF_UNIX datagram socket (what systemd listens on)."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from cjb.appliance.sd_notify import Notifier, socket_address, watchdog_interval


def test_socket_address_forms() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@cjb-test") == b"\0cjb-test"
    assert socket_address("") is None
    assert socket_address("vsock:2:1234") is None


def test_watchdog_interval_is_half_and_only_for_this_process() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 7) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 7) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, 7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, 7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "junk"}, 7) is None
    assert watchdog_interval({}, 7) is None


def test_ready_once_and_watchdog_pings_paced(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(2)
    now = [100.0]
    env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    n = Notifier(env, clock=lambda: now[0])
    assert n.interval == 2.0
    n.ready("running")
    n.ready()  # once only
    n.alive()
    n.alive()  # too soon: paced to twice per interval
    now[0] += 1.0
    n.alive()
    got = [server.recv(256).decode() for _ in range(3)]
    assert got == ["READY=1\nSTATUS=running", "WATCHDOG=1", "WATCHDOG=1"]
    assert n.next_ping() == 102.0
    server.setblocking(False)
    try:
        extra = server.recv(256)
    except BlockingIOError:
        extra = b""
    assert extra == b"", f"unpaced ping: {extra!r}"
    server.close()


def test_abstract_socket_and_silence_outside_systemd() -> None:
    name = f"cjb-notify-test-{os.getpid()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(b"\0" + name.encode())
    server.settimeout(2)
    received: list[bytes] = []
    t = threading.Thread(target=lambda: received.append(server.recv(256)))
    t.start()
    Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
    t.join(3)
    server.close()
    assert received == [b"READY=1"]
    quiet = Notifier({})
    quiet.ready()
    quiet.alive()
    assert quiet.sent == [] and quiet.next_ping() is None


def test_a_vanished_socket_never_raises(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone"), "WATCHDOG_USEC": "1000000"})
    n.ready()
    n.alive()
    assert n.sent == []
