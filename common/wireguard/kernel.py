"""The kernel-module backend: `ip link add … type wireguard`, configured with `wg` (genetlink).

Used automatically where the module is loaded (docs/decisions/0004-wireguard-then-vxlan.md).
`wg set` reads the private key
from stdin (`private-key /dev/stdin`), never from argv or a file. Readback is
`wg show IF dump`. This machine has no module: tests drive it against a stand-in `wg` only.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import time
from pathlib import Path

from cjb.common.netlink import netns
from cjb.common.wireguard.keys import b64_to_raw
from cjb.common.wireguard.model import DeviceStatus, Endpoint, PeerStatus, WireGuardError
from cjb.common.wireguard.plan import SetRequest


def module_loaded() -> bool:
    """/sys/module shows the host's modules from any network namespace."""
    return os.path.isdir("/sys/module/wireguard")


def wg_set_argv(ifname: str, request: SetRequest) -> tuple[list[str], bytes | None]:
    """argv for `wg set` and the stdin it needs (the private key, if it changes)."""
    argv = ["set", ifname]
    stdin = None
    if request.private_key is not None:
        b64_to_raw(request.private_key, "private key")  # validate before it goes anywhere
        argv += ["private-key", "/dev/stdin"]
        stdin = request.private_key.encode() + b"\n"
    if request.listen_port is not None:
        argv += ["listen-port", str(request.listen_port)]
    for op in request.peers:
        argv += ["peer", op.public_key]
        if op.remove:
            argv.append("remove")
            continue
        if op.endpoint is not None:
            argv += ["endpoint", str(op.endpoint)]
        if op.keepalive is not None:
            argv += ["persistent-keepalive", str(op.keepalive or "off")]
        if op.allowed_ips is not None:
            # `wg set … allowed-ips` replaces the list (an empty string clears it).
            argv += ["allowed-ips", ",".join(str(n) for n in op.allowed_ips)]
    return argv, stdin


def parse_dump(text: str) -> DeviceStatus:
    """`wg show IF dump`: the device line, then one tab-separated line per peer."""
    lines = [line for line in text.splitlines() if line]
    if not lines:
        raise WireGuardError("wg show dump: empty output")
    dev = lines[0].split("\t")
    private_key = dev[0] if dev[0] != "(none)" else None
    listen_port = int(dev[2]) if len(dev) > 2 and dev[2].isdigit() else 0
    peers = []
    for line in lines[1:]:
        f = line.split("\t")
        if len(f) < 8:
            continue
        allowed = tuple(
            ipaddress.ip_network(n, strict=False) for n in f[3].split(",") if n and n != "(none)"
        )
        endpoint = Endpoint.parse(f[2]) if f[2] != "(none)" else None
        handshake = int(f[4]) or None
        keepalive = int(f[7]) if f[7].isdigit() else 0
        peers.append(
            PeerStatus(f[0], allowed, endpoint, keepalive, handshake, int(f[5]), int(f[6]))
        )
    return DeviceStatus(private_key, listen_port, tuple(peers))


class KernelBackend:
    name = "kernel"

    def __init__(self) -> None:
        found = shutil.which("wg")
        if found is None:
            raise WireGuardError(
                "wg not found: apt-get install -y --no-install-recommends wireguard-tools"
            )
        self.wg = found

    def _run(self, ns: str | None, argv: list[str], stdin: bytes | None = None) -> str:
        with netns(ns):
            proc = subprocess.run(argv, input=stdin, capture_output=True, check=False)
        if proc.returncode != 0:
            # argv carries no secret (keys go through stdin), so naming the command is safe.
            raise WireGuardError(
                f"{ns or '(current netns)'}: {' '.join(argv[:3])}: "
                f"{proc.stderr.decode(errors='replace').strip()}"
            )
        return proc.stdout.decode(errors="replace")

    def exists(self, ns: str | None, ifname: str) -> bool:
        with netns(ns):
            proc = subprocess.run(
                [self.wg, "show", ifname, "dump"], capture_output=True, check=False
            )
        return proc.returncode == 0

    def create(self, ns: str | None, ifname: str, log_file: Path | None = None) -> None:
        self._run(ns, ["ip", "link", "add", "dev", ifname, "type", "wireguard"])
        deadline = time.monotonic() + 2
        while not self.exists(ns, ifname) and time.monotonic() < deadline:
            time.sleep(0.02)

    def delete(self, ns: str | None, ifname: str) -> None:
        if self.exists(ns, ifname):
            self._run(ns, ["ip", "link", "del", "dev", ifname])

    def get(self, ns: str | None, ifname: str) -> DeviceStatus:
        return parse_dump(self._run(ns, [self.wg, "show", ifname, "dump"]))

    def set(self, ns: str | None, ifname: str, request: SetRequest) -> None:
        argv, stdin = wg_set_argv(ifname, request)
        self._run(ns, [self.wg, *argv], stdin)
