"""The one typed wrapper around pyroute2 (and nft): kernel network state as data.

Describe what should exist with `spec` (namespaces, links, addresses, routes, sysctls),
make it so with `apply(kernel, spec)`; `RealKernel` talks to the kernel, `FakeKernel`
renders the result as text for golden tests. pyroute2 objects never leave `real`.
"""

from cjb.common.netlink.apply import apply, link_sysctl_key, remove
from cjb.common.netlink.kernel import Kernel, LinkState, NetlinkError
from cjb.common.netlink.nsenter import enter, netns, netns_inode, netns_path
from cjb.common.netlink.spec import (
    Bridge,
    Dummy,
    Existing,
    Link,
    Namespace,
    NetworkSpec,
    Route,
    SpecError,
    TcBpf,
    Veth,
    VethPeer,
    Vxlan,
)

__all__ = [
    "Bridge",
    "Dummy",
    "Existing",
    "Kernel",
    "Link",
    "LinkState",
    "Namespace",
    "NetlinkError",
    "NetworkSpec",
    "Route",
    "SpecError",
    "TcBpf",
    "Veth",
    "VethPeer",
    "Vxlan",
    "apply",
    "enter",
    "link_sysctl_key",
    "netns",
    "netns_inode",
    "netns_path",
    "remove",
]
