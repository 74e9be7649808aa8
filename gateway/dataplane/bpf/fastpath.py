"""One tenant's fast path: the loaded object, its config map, programs per port, counters.

The object is built by `make bpf` (clang) in a checkout; `find_object` finds it, or builds
one into the gateway's state directory for an installed package (common/bpf_object.py).
Attaching the programs to links is the netlink wrapper's job (`TcBpf` on a `Link`); the
worker's AF_PACKET sockets get the matching `*_skip` socket filter so every frame is
handled exactly once (packet taps see ingress frames before tc does).
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from cjb.common import bpf_object
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


OBJECT_ENV = "CJB_BPF_OBJECT"  # an explicit object (tests, benches): used as is


def object_path() -> Path:
    override = os.environ.get(OBJECT_ENV)
    return Path(override) if override else SOURCE.with_suffix("").with_suffix(".bpf.o")


def build_object(force: bool = False) -> Path:
    """Compile xlat.bpf.c next to it when the object is missing or older than the source."""
    out = object_path()
    if not force and out.exists() and out.stat().st_mtime >= SOURCE.stat().st_mtime:
        return out
    try:
        return bpf_object.compile_into(SOURCE, out)
    except (bpf_object.BpfBuildError, OSError) as exc:
        raise FastPathError(str(exc)) from None


def find_object(cache_dir: Path | None = None) -> Path:
    """The object the gateway loads: `$CJB_BPF_OBJECT`, else a fresh build next to the
    source or in `cache_dir`, else one compiled now (common/bpf_object.py)."""
    try:
        return bpf_object.locate(
            SOURCE, override_env=OBJECT_ENV, cache_dirs=[cache_dir] if cache_dir else []
        )
    except bpf_object.BpfBuildError as exc:
        raise FastPathError(str(exc)) from None


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
