"""The VXLAN guard: a tc-eBPF filter on the outer path, the binding nftables cannot lose.

`guard.bpf.c` drops VXLAN arriving on an underlay NIC when the transport is WireGuard, and
on the WireGuard interface (or, in the plain trusted-link mode, on the underlay) admits a
VNI only from the outer source bound to it. `guard` loads and configures it; `libbpf` is
the ctypes binding to Debian's libbpf.so.1 (also used by the gateway's kernel fast path).
"""

from cjb.common.vxlan_guard.guard import (
    COUNTER_NAMES,
    GuardError,
    VxlanGuard,
    attach,
    build_object,
    object_path,
    underlay_links,
)

__all__ = [
    "COUNTER_NAMES",
    "GuardError",
    "VxlanGuard",
    "attach",
    "build_object",
    "object_path",
    "underlay_links",
]
