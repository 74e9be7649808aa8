"""One tenant's fast path: the loaded object, its config map, programs per port, counters.

The object is built by `make bpf` (clang) at install time; `build_object` does the same
for tests and benchmarks on a fresh checkout. Attaching the programs to links is the
netlink wrapper's job (`TcBpf` on a `Link`); the worker's AF_PACKET sockets get the
matching `*_skip` socket filter so every frame is handled exactly once (packet taps see
ingress frames before tc does).
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cjb.common.vxlan_guard import libbpf
from cjb.gateway.dataplane.bpf.counters import COUNTER_NAMES, FastPathCounters

SOURCE = Path(__file__).with_name("xlat.bpf.c")
SO_ATTACH_BPF = 50
_CFG = struct.Struct("=6I12s")  # struct cjb_cfg

# Port role -> (tc ingress program, worker socket filter).
PROGRAMS = {
    "tunnel": ("cjb_tunnel_in", "cjb_tunnel_skip"),
    "service": ("cjb_service_in", "cjb_service_skip"),
    "native": ("cjb_native_in", "cjb_native_skip"),
}


class FastPathError(Exception):
    """The fast path cannot be built, loaded or configured; the message says the fix."""


def object_path() -> Path:
    override = os.environ.get("CJB_BPF_OBJECT")
    return Path(override) if override else SOURCE.with_suffix("").with_suffix(".bpf.o")


def clang_argv(source: Path, output: Path) -> list[str]:
    arch = os.uname().machine
    # -mcpu=v3: atomic fetch-and-add for the IPv4 ID counter.
    return [
        "clang",
        "-O2",
        "-g",
        "-target",
        "bpf",
        "-mcpu=v3",
        f"-I/usr/include/{arch}-linux-gnu",
        "-Wall",
        "-c",
        str(source),
        "-o",
        str(output),
    ]


def build_object(force: bool = False) -> Path:
    """Compile xlat.bpf.c when the object is missing or older than the source."""
    out = object_path()
    if not force and out.exists() and out.stat().st_mtime >= SOURCE.stat().st_mtime:
        return out
    if shutil.which("clang") is None:
        raise FastPathError(
            f"{out} is missing and clang is not installed: "
            "apt-get install -y --no-install-recommends clang llvm libbpf-dev, then `make bpf`"
        )
    done = subprocess.run(clang_argv(SOURCE, out), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise FastPathError(f"clang failed building {out}:\n{done.stderr.strip()}")
    return out


@dataclass(frozen=True, slots=True)
class FastPathConfig:
    tunnel_ifindex: int
    service_ifindex: int
    native_ifindex: int  # 0: no native IPv6 link
    lan_mtu: int
    service_mtu: int
    # The service-host links' MACs (at most 2): unicast from the tunnel to any other MAC
    # goes to the slow path, whose LAN guard drops it. Empty: no check.
    cloud_macs: tuple[bytes, ...] = ()

    def pack(self, enabled: bool = True) -> bytes:
        macs = list(self.cloud_macs[:2])
        macs += macs[-1:] * (2 - len(macs))  # an unused slot repeats the other MAC
        return _CFG.pack(
            self.tunnel_ifindex,
            self.service_ifindex,
            self.native_ifindex,
            self.lan_mtu,
            self.service_mtu,
            int(enabled),
            b"".join(macs),
        )


class FastPath:
    """A loaded fast-path object for one tenant. Close it after detaching (an attached
    program keeps itself and its maps alive in the kernel anyway)."""

    def __init__(self, path: Path | None = None, first_ipv4_id: int = 0) -> None:
        path = path or object_path()
        if not path.exists():
            raise FastPathError(f"{path} is missing: run `make bpf` (needs clang, libbpf-dev)")
        try:
            self._obj = libbpf.BpfObject(str(path))
        except libbpf.LibbpfError as exc:
            raise FastPathError(str(exc)) from None
        self.config: FastPathConfig | None = None
        libbpf.map_update(
            self._obj.map_fd("cjb_ipv4_id"), bytes(4), struct.pack("=I", first_ipv4_id & 0xFFFF)
        )

    def close(self) -> None:
        self._obj.close()

    def __enter__(self) -> FastPath:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def configure(self, config: FastPathConfig) -> None:
        libbpf.map_update(self._obj.map_fd("cjb_cfg"), bytes(4), config.pack())
        self.config = config

    def disable(self) -> None:
        """Pass everything to the slow path (the tc programs and the worker filters read
        the same flag), e.g. before detaching while the filtered worker still runs."""
        libbpf.map_update(self._obj.map_fd("cjb_cfg"), bytes(4), bytes(_CFG.size))
        self.config = None

    def program_fd(self, port: str) -> int:
        return self._obj.program_fd(PROGRAMS[port][0])

    def program_name(self, port: str) -> str:
        return PROGRAMS[port][0]

    def program_id(self, port: str) -> int:
        return libbpf.prog_id(self.program_fd(port))

    def attach_skip_filter(self, sock: socket.socket, port: str) -> None:
        """Make the worker's socket on `port` ignore the frames the tc program takes."""
        fd = self._obj.program_fd(PROGRAMS[port][1])
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, fd)

    def counters(self) -> FastPathCounters:
        fd = self._obj.map_fd("cjb_stats")
        cpus = libbpf.possible_cpus()
        per_slot = []
        for slot in range(len(COUNTER_NAMES)):
            raw = libbpf.map_lookup(fd, struct.pack("=I", slot), 8 * cpus)
            per_slot.append(list(struct.unpack(f"={cpus}Q", raw)))
        return FastPathCounters.from_per_cpu(per_slot)
