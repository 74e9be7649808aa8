"""Helpers for the real-kernel lab tests: skip reasons, a lab per module, processes and
packet captures inside lab namespaces. Used by tests/test_lab_*.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from cjb.common.netlink import netns
from cjb.gateway.dataplane.packet_io import kernel_drops
from cjb.lab import procs
from cjb.lab.control import down, lab_namespaces, up
from cjb.lab.state import LabState

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def require(*programs: str) -> None:
    """Skip (never pass) with the reason, when the lab cannot run here."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the lab creates network namespaces, veth and VXLAN links")
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pytest.skip(f"missing programs {missing}: apt-get install -y --no-install-recommends ...")


@contextmanager
def lab(tenants: int, same_mac: bool = False) -> Iterator[LabState]:
    require("nft", "curl")
    state = up(tenants, same_mac, log=lambda _m: None)
    try:
        yield state
    finally:
        remaining = down(log=lambda _m: None, only=state.run_id)
        assert not remaining, f"left behind: {remaining}"


@contextmanager
def wireguard_lab(tenants: int, *programs: str) -> Iterator[LabState]:
    """A lab with the WireGuard transport (wireguard-go when the kernel has no module);
    `programs` are what the test itself runs besides nft."""
    require("nft", *programs)
    if not os.path.isdir("/sys/module/wireguard"):
        require("wireguard-go")
    state = up(tenants, log=lambda _m: None, transport="wireguard")
    try:
        yield state
    finally:
        remaining = down(log=lambda _m: None, only=state.run_id)
        assert not remaining, f"left behind: {remaining}"


def run_in(
    ns: str, argv: list[str], timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    with netns(ns):
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, env=env
        )


def python_in(
    ns: str, code: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return run_in(ns, [sys.executable, "-c", code, *args], timeout=timeout)


def spawn_python(ns: str, code: str, *args: str) -> subprocess.Popen[str]:
    with netns(ns):
        return subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def wait_port(ns: str, port: int, kind: int = socket.SOCK_STREAM, timeout: float = 10) -> None:
    """Wait until something listens on [::]:port in `ns` (via /proc/net/{tcp6,udp6})."""
    table = "tcp6" if kind == socket.SOCK_STREAM else "udp6"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with netns(ns), open(f"/proc/net/{table}") as f:
            if f":{port:04X} " in f.read():
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port} in {ns}")


def gateway_status(state: LabState) -> dict[str, Any]:
    path = state.run_dir / "gateway" / "status.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def fresh_status(state: LabState) -> dict[str, Any]:
    """The status file after the gateway's next rewrite (it rewrites every second)."""
    path = state.run_dir / "gateway" / "status.json"
    before = path.stat().st_mtime_ns
    deadline = time.monotonic() + 5
    while path.stat().st_mtime_ns == before and time.monotonic() < deadline:
        time.sleep(0.05)
    return gateway_status(state)


class Capture:
    """AF_PACKET sockets on links of one namespace; collects every frame received.

    `lost[link]`: frames the kernel dropped because the socket's queue was full (read at
    each drain): a capture with losses cannot prove that a frame never arrived."""

    def __init__(self, ns: str, ifnames: list[str]) -> None:
        self.socks: dict[str, socket.socket] = {}
        self.lost: dict[str, int] = dict.fromkeys(ifnames, 0)
        with netns(ns):
            for name in ifnames:
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
                s.bind((name, ETH_P_ALL))
                s.setblocking(False)
                self.socks[name] = s

    def drain(self) -> dict[str, list[bytes]]:
        out: dict[str, list[bytes]] = {name: [] for name in self.socks}
        for name, s in self.socks.items():
            while True:
                try:
                    frame, addr = s.recvfrom(65535)
                except BlockingIOError:
                    break
                if addr[2] != PACKET_OUTGOING:
                    out[name].append(frame)
            self.lost[name] += kernel_drops(s)
        return out

    def close(self) -> None:
        for s in self.socks.values():
            s.close()


def send_frames(ns: str, ifname: str, frames: list[bytes]) -> None:
    with netns(ns), socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((ifname, 0))
        for frame in frames:
            s.send(frame)


def processes_of(state: LabState) -> list[int]:
    return [p.pid for p in state.processes if procs.alive(p.pid)]


def namespaces_of(run_id: str) -> set[str]:
    return {n for n in lab_namespaces() if n.startswith(f"cjblab{run_id}-")}


def read_log(state: LabState, node: str) -> str:
    return Path(state.run_dir / "logs" / f"{node}.log").read_text()


def container_init(nspawn_pid: int, timeout: float = 20) -> int:
    """PID of the systemd that `systemd-nspawn --boot` (pid `nspawn_pid`) started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        todo = [nspawn_pid]
        while todo:
            pid = todo.pop()
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return pid
                todo += [
                    int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                ]
            except OSError:
                continue
        time.sleep(0.2)
    raise AssertionError("the container's systemd did not start")


@contextmanager
def nspawn_runtime_dir() -> Iterator[None]:
    """systemd-nspawn wants a tmpfs at /run/systemd/nspawn; PID 1 here is not systemd
    (docs/platform.md). Mounted for the duration unless it already is."""
    path = Path("/run/systemd/nspawn")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mountpoint", "-q", str(path)], check=False).returncode == 0
    if not mounted:
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(path)], check=True)
    try:
        yield
    finally:
        if not mounted:
            subprocess.run(["umount", str(path)], check=False)


def stop_container(nspawn: subprocess.Popen[bytes]) -> None:
    """Stop a `systemd-nspawn --boot` container: SIGTERM (nspawn turns it into an orderly
    shutdown), then SIGKILL if it is not gone within 30 s."""
    nspawn.send_signal(signal.SIGTERM)
    try:
        nspawn.wait(timeout=30)
    except subprocess.TimeoutExpired:
        nspawn.kill()
        nspawn.wait()


def snapshot_checkout(dest: Path) -> Path:
    """The checkout's files (tracked and new, not ignored), copied into `dest`: an image
    build's inputs."""
    repo = Path(__file__).resolve().parent.parent
    files = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-co", "--exclude-standard", "-z"],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = repo / os.fsdecode(name)
        if src.is_file():
            (dest / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / os.fsdecode(name))
    return dest


def cached_base_root(cache: Path) -> Path:
    """The cached Debian base root tarball, built first when the cache has none (mmdebstrap,
    a few minutes, the same call and cache key as `cjb image build`'s first step), so a test
    that boots it does not depend on an image build having run before it."""
    from urllib.parse import urlsplit

    from cjb.appliance.image import ImageError
    from cjb.appliance.image.base import ensure_base
    from cjb.appliance.image.build import BuildOptions, source_date_epoch
    from cjb.appliance.image.progress import Progress
    from cjb.appliance.image.recipe import load_recipe
    from cjb.appliance.image.sources import host_sources, mirror_lines

    if not shutil.which("mmdebstrap"):
        pytest.skip("missing mmdebstrap: apt-get install -y --no-install-recommends mmdebstrap")
    recipe = load_recipe()
    mirrors = mirror_lines(recipe.suite, host_sources())
    host = urlsplit(mirrors[0].split()[1]).hostname or ""
    try:
        socket.create_connection((host, 80), timeout=5).close()
    except OSError:
        cached = list((cache / "base").glob("*.tar"))
        if not cached:
            pytest.skip(f"no cached base root in {cache} and no network to {host}")
    lines: list[str] = []
    try:
        path, _ = ensure_base(
            recipe, BuildOptions().arch, mirrors, cache, Progress(lines.append),
            source_date_epoch(Path(__file__).resolve().parent.parent),
        )  # fmt: skip
    except ImageError as e:
        raise AssertionError(f"building the base root failed: {e}\n" + "\n".join(lines)) from e
    return path
