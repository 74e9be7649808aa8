"""The port the reconciler talks to: observed kernel state and the primitive changes.

Two adapters implement it: `real.RealKernel` (pyroute2, setns) and `fake.FakeKernel`
(in memory, renders its state as sorted text for golden tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cjb.common.netlink.spec import Interface, Link, Route, TcBpf


class NetlinkError(Exception):
    """A kernel change failed; the message names the namespace, the object and the errno."""


@dataclass(frozen=True, slots=True)
class LinkState:
    """What the kernel reports about one link, in our own plain types."""

    name: str
    kind: str  # "veth", "bridge", "vxlan", "dummy", "" for anything else
    alias: str | None
    mtu: int
    master: str | None
    up: bool
    mac: str
    vxlan: tuple[int, str, str, int] | None = None  # (vni, local, remote, port)
    tx_errors: int = 0  # IFLA_STATS64; on a VXLAN port: packets too big for the tunnel


class Kernel(Protocol):
    def namespaces(self) -> set[str]: ...

    def add_namespace(self, name: str) -> None: ...

    def del_namespace(self, name: str) -> None: ...

    def links(self, ns: str | None) -> dict[str, LinkState]: ...

    def link(self, ns: str | None, name: str) -> LinkState | None:
        """One link's state (None when there is none): cheaper than `links` for one name."""
        ...

    def add_link(self, ns: str | None, link: Link, tag: str) -> None: ...

    def set_link(
        self,
        ns: str | None,
        name: str,
        *,
        mtu: int | None = None,
        master: str | None = None,
        nomaster: bool = False,
        up: bool | None = None,
        mac: str | None = None,
        alias: str | None = None,
    ) -> None: ...

    def del_link(self, ns: str | None, name: str) -> None: ...

    def addresses(self, ns: str | None, name: str) -> set[Interface]: ...

    def all_addresses(self, ns: str | None) -> dict[str, set[Interface]]:
        """Every link's addresses in one read (link name -> addresses)."""
        ...

    def add_address(self, ns: str | None, name: str, address: Interface) -> None: ...

    def del_address(self, ns: str | None, name: str, address: Interface) -> None: ...

    def routes(self, ns: str | None) -> set[Route]: ...

    def add_route(self, ns: str | None, route: Route) -> None: ...

    def del_route(self, ns: str | None, route: Route) -> None: ...

    def sysctl(self, ns: str | None, key: str) -> str | None: ...

    def set_sysctl(self, ns: str | None, key: str, value: str) -> None: ...

    def offloads_on(self, ns: str | None, name: str) -> bool: ...

    def disable_offloads(self, ns: str | None, name: str) -> None: ...

    def offloads_all_on(self, ns: str | None, name: str) -> bool: ...

    def enable_offloads(self, ns: str | None, name: str) -> None: ...

    def tc_ingress(self, ns: str | None, name: str) -> str | None:
        """The name of the BPF filter on the link's tc ingress, None when there is none."""
        ...

    def set_tc_ingress(self, ns: str | None, name: str, prog: TcBpf) -> None: ...

    def del_tc_ingress(self, ns: str | None, name: str) -> None: ...
