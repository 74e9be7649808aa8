"""Load the VXLAN guard (guard.bpf.c), keep its VNI -> source map, attach it, count.

One object per process. Its programs stay attached, with their maps, after the process
exits: the binding holds while nobody runs (a restart loads a new object and replaces the
filters). Nothing here depends on nftables, so `nft flush ruleset` leaves it in force.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

from cjb.common import bpf_object
from cjb.common.netlink import Kernel, TcBpf
from cjb.common.netlink.spec import TC_FILTER_PREFIX
from cjb.common.vxlan_guard import libbpf

SOURCE = Path(__file__).with_name("guard.bpf.c")
OBJECT_ENV = "CJB_GUARD_OBJECT"
# Where the guard sits: underlay NICs when VXLAN runs inside WireGuard ("wan": no VXLAN
# at all), the WireGuard interface ("tunnel": VNI -> bound source), underlay NICs in the
# plain-VXLAN trusted-link mode ("trusted": the same binding on Ethernet).
PROGRAMS = {"wan": "guard_wan", "tunnel": "guard_tunnel", "trusted": "guard_trusted"}
# The counter slots of guard.bpf.c, in order.
COUNTER_NAMES = ("bound", "unknown_vni", "spoofed", "from_underlay", "fragment")
_CFG = struct.Struct("=2I")
_KEY = struct.Struct("=I")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class GuardError(Exception):
    """The guard cannot be built, loaded or configured; the message says the fix."""


def object_path() -> Path:
    override = os.environ.get(OBJECT_ENV)
    return Path(override) if override else SOURCE.with_suffix("").with_suffix(".bpf.o")


def build_object(cache_dir: Path | None = None) -> Path:
    """`$CJB_GUARD_OBJECT`, else a fresh guard.bpf.o next to the source or in `cache_dir`,
    else one compiled now (common/bpf_object.py)."""
    try:
        return bpf_object.locate(
            SOURCE, override_env=OBJECT_ENV, cache_dirs=[cache_dir] if cache_dir else []
        )
    except bpf_object.BpfBuildError as exc:
        raise GuardError(str(exc)) from None


def peer_bytes(address: Address) -> bytes:
    """16 bytes as the program compares them: IPv4 as ::ffff:a.b.c.d (RFC 4291 §2.5.5.2)."""
    if address.version == 4:
        return ipaddress.IPv6Address(f"::ffff:{address}").packed
    return address.packed


class VxlanGuard:
    def __init__(self, path: Path | None = None, cache_dir: Path | None = None) -> None:
        try:
            path = path or build_object(cache_dir)
            self._obj = libbpf.BpfObject(str(path))
        except (libbpf.LibbpfError, OSError) as exc:
            raise GuardError(f"VXLAN guard unavailable: {exc}") from None
        self.path = path

    def close(self) -> None:
        self._obj.close()

    def configure(self, port: int, bindings: Mapping[int, Address]) -> None:
        """VNI -> the one outer source allowed to send it; VNIs not named are dropped."""
        fd = self._obj.map_fd("guard_bind")
        spoofed = self._obj.map_fd("guard_spoofed")
        wanted = {_KEY.pack(vni): peer_bytes(addr) for vni, addr in bindings.items()}
        try:
            have = set(libbpf.map_keys(spoofed, _KEY.size))
            zeros = bytes(8 * libbpf.possible_cpus())
            for key, value in wanted.items():
                if key not in have:
                    libbpf.map_update(spoofed, key, zeros)
                libbpf.map_update(fd, key, value)
            for key in libbpf.map_keys(fd, _KEY.size):
                if key not in wanted:
                    libbpf.map_delete(fd, key)
            for key in have - set(wanted):
                libbpf.map_delete(spoofed, key)
            libbpf.map_update(self._obj.map_fd("guard_cfg"), bytes(4), _CFG.pack(port, 1))
        except libbpf.LibbpfError as exc:
            raise GuardError(f"configuring the VXLAN guard: {exc}") from None

    def bindings(self) -> dict[int, bytes]:
        fd = self._obj.map_fd("guard_bind")
        return {
            _KEY.unpack(key)[0]: libbpf.map_lookup(fd, key, 16)
            for key in libbpf.map_keys(fd, _KEY.size)
        }

    def spoofed(self) -> dict[int, int]:
        """VNI -> packets that carried it from a source other than the bound one."""
        fd = self._obj.map_fd("guard_spoofed")
        cpus = libbpf.possible_cpus()
        return {
            _KEY.unpack(key)[0]: sum(
                struct.unpack(f"={cpus}Q", libbpf.map_lookup(fd, key, 8 * cpus))
            )
            for key in libbpf.map_keys(fd, _KEY.size)
        }

    def program(self, role: str) -> TcBpf:
        fd = self._obj.program_fd(PROGRAMS[role])
        return TcBpf(fd, libbpf.prog_id(fd), PROGRAMS[role])

    def counters(self) -> dict[str, int]:
        fd = self._obj.map_fd("guard_stats")
        cpus = libbpf.possible_cpus()
        out = {}
        for slot, name in enumerate(COUNTER_NAMES):
            raw = libbpf.map_lookup(fd, _KEY.pack(slot), 8 * cpus)
            out[name] = sum(struct.unpack(f"={cpus}Q", raw))
        return out


def attach(kernel: Kernel, ns: str | None, links: Iterable[str], prog: TcBpf) -> list[str]:
    """Put `prog` on each link's tc ingress unless it is there already; returns changes."""
    changes = []
    for name in links:
        if kernel.tc_ingress(ns, name) != prog.filter_name:
            kernel.set_tc_ingress(ns, name, prog)
            changes.append(f"attach tc ingress {prog.filter_name} on {name}")
    return changes


def underlay_links(kernel: Kernel, ns: str | None, exclude: Iterable[str]) -> list[str]:
    """Every link that can bring outside packets in: all but loopback, the tunnel and the
    links named in `exclude` (our own ports, which carry no IP stack)."""
    skip = {"lo", *exclude}
    return sorted(name for name in kernel.links(ns) if name not in skip)


def guarded(kernel: Kernel, ns: str | None, name: str) -> bool:
    current = kernel.tc_ingress(ns, name)
    return current is not None and current.startswith(f"{TC_FILTER_PREFIX}guard_")
