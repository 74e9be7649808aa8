"""The kernel fast path (tc-eBPF): the translator's common case in the kernel.

`xlat.bpf.c` is the program (built with `make bpf`, never committed);
`cjb.common.vxlan_guard.libbpf` loads it through ctypes on Debian's libbpf.so.1;
`fastpath` fills one tenant's maps and names the programs for each port; `counters` reads
the per-CPU counter map. Attaching to links is the netlink wrapper's job
(`cjb.common.netlink.TcBpf`).
"""

from cjb.gateway.dataplane.bpf.counters import COUNTER_NAMES, FastPathCounters
from cjb.gateway.dataplane.bpf.fastpath import (
    FastPath,
    FastPathConfig,
    FastPathError,
    build_object,
    object_path,
)

__all__ = [
    "COUNTER_NAMES",
    "FastPath",
    "FastPathConfig",
    "FastPathCounters",
    "FastPathError",
    "build_object",
    "object_path",
]
