"""Starting wireguard-go: the race between its bind() and listen() must not cost the tunnel.

wireguard-go binds its UAPI socket before it listens; a connect in between is refused. The
backend used to take a refused socket for a dead process's leftover and delete it: the
starting process then ran on without a reachable socket, holding its tun name, and the next
start failed with "name in use". These tests stand in a process that carries wireguard-go's
command line (`wireguard-go IFNAME`, a copy of sleep: its one argument is the time) and a
socket file that is bound but not listening.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cjb.common.wireguard.model import WireGuardError
from cjb.common.wireguard.userspace import UserspaceBackend

IFNAME = "60"  # a valid interface name that `sleep` reads as 60 seconds


@pytest.fixture
def fake_binary(tmp_path: Path) -> Path:
    sleep = shutil.which("sleep")
    assert sleep is not None
    binary = tmp_path / "bin" / "wireguard-go"
    binary.parent.mkdir()
    shutil.copy(sleep, binary)
    return binary


@pytest.fixture
def starting(fake_binary: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([str(fake_binary), IFNAME])
    # Popen returns after fork, possibly before exec: wait until the child carries the
    # command line the backend looks for, or the test would race its own fixture.
    want = f"{fake_binary}\0{IFNAME}\0".encode()
    deadline = time.monotonic() + 5.0
    while Path(f"/proc/{proc.pid}/cmdline").read_bytes() != want:
        assert time.monotonic() < deadline, "the stand-in process never exec'd"
        time.sleep(0.005)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _bound_not_listening(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    return s


def test_refused_socket_of_a_live_process_is_not_deleted(
    tmp_path: Path, fake_binary: Path, starting: subprocess.Popen[bytes]
) -> None:
    backend = UserspaceBackend(binary=str(fake_binary), socket_dir=tmp_path)
    with _bound_not_listening(backend.socket_path(IFNAME)):
        assert not backend.exists(None, IFNAME)
        assert backend.socket_path(IFNAME).exists(), "deleted under a starting process"


def test_refused_socket_without_a_process_is_a_leftover(tmp_path: Path, fake_binary: Path) -> None:
    backend = UserspaceBackend(binary=str(fake_binary), socket_dir=tmp_path)
    with _bound_not_listening(backend.socket_path(IFNAME)):
        assert not backend.exists(None, IFNAME)
        assert not backend.socket_path(IFNAME).exists()


def test_start_that_never_opens_its_socket_is_stopped_and_says_so(
    tmp_path: Path, fake_binary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cjb.common.wireguard.userspace.START_TIMEOUT", 0.5)
    log = tmp_path / "wg.log"
    log.write_text("ERROR: (60) 2026/01/01 UAPI listen error: something\n")
    backend = UserspaceBackend(binary=str(fake_binary), socket_dir=tmp_path)
    with pytest.raises(WireGuardError, match="did not open") as err:
        backend.create(None, IFNAME, log)
    assert str(log) in str(err.value) and "UAPI listen error" in str(err.value)
    from cjb.common.wireguard.userspace import _pids_of

    assert not _pids_of(str(fake_binary), IFNAME), "the failed start's process still runs"
