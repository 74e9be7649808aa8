"""Make the kernel match a `NetworkSpec`, touching only what differs.

Idempotent: a second `apply` of the same spec reports no changes. Ownership is by tag:
links we create carry `spec.tag` as their alias and routes carry RTPROT_CJB, so whatever
the spec no longer lists is removed, and nothing untagged is ever deleted.

Cost: each namespace's links and addresses are dumped once per apply, and what it adds is
read back one link at a time; never a dump per link: a dump decodes every link of the
namespace, so per-link dumps made a gateway with N tenants cost O(N^2) (a no-op apply took
10 s at 21 tenants). tests/test_netlink_cost.py counts the reads.
"""

from __future__ import annotations

import ipaddress

from cjb.common.netlink.kernel import Kernel, LinkState
from cjb.common.netlink.spec import (
    KIND_NAMES,
    TC_FILTER_PREFIX,
    Bridge,
    Dummy,
    Existing,
    Interface,
    Link,
    Namespace,
    NetworkSpec,
    Route,
    Veth,
    Vxlan,
)

_LINK_LOCAL = ipaddress.IPv6Network("fe80::/10")


def link_sysctl_key(link: str, key: str) -> str:
    """ "ipv6.accept_ra" on eth0 -> "net/ipv6/conf/eth0/accept_ra"; the neighbour table's
    "ipv6.neigh.ucast_solicit" -> "net/ipv6/neigh/eth0/ucast_solicit"."""
    family, _, name = key.partition(".")
    table, _, param = name.partition(".")
    if table == "neigh" and param:
        return f"net/{family}/neigh/{link}/{param}"
    return f"net/{family}/conf/{link}/{name}"


def _ns_label(ns: str | None) -> str:
    return ns or "(current)"


class Reconciler:
    def __init__(self, kernel: Kernel, spec: NetworkSpec) -> None:
        spec.validate()
        self.kernel = kernel
        self.spec = spec
        self.changes: list[str] = []
        # One snapshot per namespace, taken lazily; a link we add is read back alone (with
        # its veth peer), and any deletion drops every snapshot (a veth's peer dies with
        # it, in another namespace). Addresses are read once, at the first link configured.
        self._snapshots: dict[str | None, dict[str, LinkState]] = {}
        self._addresses: dict[str | None, dict[str, set[Interface]]] = {}

    def _links(self, ns: str | None) -> dict[str, LinkState]:
        found = self._snapshots.get(ns)
        if found is None:
            found = self._snapshots[ns] = self.kernel.links(ns)
        return found

    def _link_addresses(self, ns: str | None, name: str) -> set[Interface]:
        table = self._addresses.get(ns)
        if table is None:
            table = self._addresses[ns] = self.kernel.all_addresses(ns)
        return table.get(name, set())

    def _forget(self) -> None:
        self._snapshots.clear()
        self._addresses.clear()

    def _read_back(self, ns: str | None, name: str) -> None:
        snapshot = self._snapshots.get(ns)
        if snapshot is None:
            return  # read in full when first needed
        state = self.kernel.link(ns, name)
        if state is None:
            snapshot.pop(name, None)
        else:
            snapshot[name] = state

    def _note(self, ns: str | None, what: str) -> None:
        self.changes.append(f"{_ns_label(ns)}: {what}")

    def run(self) -> list[str]:
        self._remove_stray_namespaces()
        self._create_namespaces()
        for ns in self.spec.namespaces:
            self._remove_stray_links(ns)
        for ns in self.spec.namespaces:
            self._apply_sysctls(ns.name, ns.sysctls)
        # Bridges, veths and dummies first: a vxlan needs its underlay link to exist.
        for ns in self.spec.namespaces:
            for link in ns.links:
                if isinstance(link.kind, Bridge | Dummy | Veth):
                    self._ensure_link(ns, link)
        for ns in self.spec.namespaces:
            for link in ns.links:
                if isinstance(link.kind, Vxlan):
                    self._ensure_link(ns, link)
        for ns in self.spec.namespaces:
            current = self._links(ns.name)
            # Masters before ports: a port goes up only once its bridge exists and is up.
            for link in sorted(ns.links, key=lambda lk: not isinstance(lk.kind, Bridge)):
                state = current.get(link.name)
                if state is None:
                    if not isinstance(link.kind, Existing):
                        self._note(ns.name, f"link {link.name} missing after create (skipped)")
                    continue
                self._configure_link(ns.name, link, state)
            self._apply_routes(ns)
        return self.changes

    # -- namespaces -------------------------------------------------------------------

    def _remove_stray_namespaces(self) -> None:
        prefix = self.spec.namespace_prefix
        if prefix is None:
            return
        wanted = {ns.name for ns in self.spec.namespaces if ns.owned}
        for name in sorted(self.kernel.namespaces()):
            if name.startswith(prefix) and name not in wanted:
                self.kernel.del_namespace(name)
                self._note(None, f"delete netns {name}")

    def _create_namespaces(self) -> None:
        existing = self.kernel.namespaces()
        for ns in self.spec.namespaces:
            if ns.owned and ns.name is not None and ns.name not in existing:
                self.kernel.add_namespace(ns.name)
                self._note(None, f"add netns {ns.name}")

    # -- links ------------------------------------------------------------------------

    def _remove_stray_links(self, ns: Namespace) -> None:
        wanted = {link.name for link in ns.links}
        for name, state in sorted(self._links(ns.name).items()):
            if state.alias == self.spec.tag and name not in wanted:
                self.kernel.del_link(ns.name, name)
                self._forget()
                self._note(ns.name, f"delete link {name}")

    def _matches(self, ns: Namespace, link: Link, state: LinkState) -> bool:
        kind = link.kind
        if state.kind != KIND_NAMES[type(kind)]:
            return False
        if isinstance(kind, Vxlan):
            return bool(state.vxlan == (kind.vni, str(kind.local), str(kind.remote), kind.port))
        if isinstance(kind, Veth):
            peer_ns = kind.peer_netns or ns.name
            peer = self._links(peer_ns).get(kind.peer)
            return peer is not None and peer.kind == "veth"
        return True

    def _ensure_link(self, ns: Namespace, link: Link) -> None:
        state = self._links(ns.name).get(link.name)
        if state is not None:
            if self._matches(ns, link, state):
                return
            self.kernel.del_link(ns.name, link.name)
            self._forget()
            self._note(ns.name, f"delete link {link.name} (kind or parameters differ)")
        if isinstance(link.kind, Veth):
            # A leftover peer name (from a pair whose other end was renamed) blocks creation.
            peer_ns = link.kind.peer_netns or ns.name
            if link.kind.peer in self._links(peer_ns):
                self.kernel.del_link(peer_ns, link.kind.peer)
                self._forget()
                self._note(peer_ns, f"delete link {link.kind.peer} (stale veth peer)")
        self.kernel.add_link(ns.name, link, self.spec.tag)
        self._read_back(ns.name, link.name)
        if isinstance(link.kind, Veth):
            self._read_back(link.kind.peer_netns or ns.name, link.kind.peer)
        self._note(ns.name, f"add link {link.name} ({KIND_NAMES[type(link.kind)]})")

    def _configure_link(self, ns: str | None, link: Link, state: LinkState) -> None:
        k = self.kernel
        self._apply_sysctls(
            ns, tuple((link_sysctl_key(link.name, key), v) for key, v in link.sysctls)
        )
        adopt = isinstance(link.kind, Existing)
        if not adopt and state.alias != self.spec.tag and state.alias is None:
            k.set_link(ns, link.name, alias=self.spec.tag)
            self._note(ns, f"tag link {link.name}")
        if link.mtu is not None and state.mtu != link.mtu:
            k.set_link(ns, link.name, mtu=link.mtu)
            self._note(ns, f"set {link.name} mtu {link.mtu}")
        if link.mac is not None and state.mac.lower() != link.mac.lower():
            k.set_link(ns, link.name, mac=link.mac)
            self._note(ns, f"set {link.name} mac {link.mac}")
        if link.master != state.master and (link.master is not None or not adopt):
            if link.master is None:
                k.set_link(ns, link.name, nomaster=True)
                self._note(ns, f"set {link.name} nomaster")
            else:
                k.set_link(ns, link.name, master=link.master)
                self._note(ns, f"set {link.name} master {link.master}")
        if link.offloads_off and k.offloads_on(ns, link.name):
            k.disable_offloads(ns, link.name)
            self._note(ns, f"set {link.name} offloads off")
        if link.offloads_on and not k.offloads_all_on(ns, link.name):
            k.enable_offloads(ns, link.name)
            self._note(ns, f"set {link.name} offloads on")
        self._apply_addresses(ns, link, adopt)
        self._apply_tc_ingress(ns, link)
        if link.up != state.up and (link.up or not adopt):
            k.set_link(ns, link.name, up=link.up)
            self._note(ns, f"set {link.name} {'up' if link.up else 'down'}")

    def _apply_addresses(self, ns: str | None, link: Link, adopt: bool) -> None:
        current = self._link_addresses(ns, link.name)
        wanted = set(link.addresses)
        for address in sorted(wanted - current, key=str):
            self.kernel.add_address(ns, link.name, address)
            self._note(ns, f"add address {address} on {link.name}")
        if adopt:
            return
        for address in sorted(current - wanted, key=str):
            # Kernel-generated link-local addresses belong to the kernel (unless the spec
            # asked for addr_gen_mode none, in which case the spec's list is exact).
            exact = ("ipv6.addr_gen_mode", "1") in link.sysctls
            if address.version == 6 and address.ip in _LINK_LOCAL and not exact:
                continue
            self.kernel.del_address(ns, link.name, address)
            self._note(ns, f"delete address {address} on {link.name}")

    def _apply_tc_ingress(self, ns: str | None, link: Link) -> None:
        current = self.kernel.tc_ingress(ns, link.name)
        wanted = link.tc_ingress
        if wanted is not None:
            if current != wanted.filter_name:
                self.kernel.set_tc_ingress(ns, link.name, wanted)
                self._note(ns, f"attach tc ingress {wanted.filter_name} on {link.name}")
        elif current is not None and current.startswith(TC_FILTER_PREFIX):
            self.kernel.del_tc_ingress(ns, link.name)
            self._note(ns, f"detach tc ingress {current} from {link.name}")

    # -- routes and sysctls -----------------------------------------------------------

    def _apply_routes(self, ns: Namespace) -> None:
        if ns.routes is None:
            return
        current = self.kernel.routes(ns.name)
        wanted = set(ns.routes)

        # A spec route without a device matches the kernel's route via any device.
        def same(w: Route, c: Route) -> bool:
            return (w.dst, w.gateway) == (c.dst, c.gateway) and w.dev in (None, c.dev)

        for route in sorted(current, key=str):
            if not any(same(w, route) for w in wanted):
                self.kernel.del_route(ns.name, route)
                self._note(ns.name, f"delete route {route.dst}")
        for route in sorted(wanted, key=str):
            if not any(same(route, c) for c in current):
                self.kernel.add_route(ns.name, route)
                self._note(ns.name, f"add route {route.dst} via {route.gateway} dev {route.dev}")

    def _apply_sysctls(self, ns: str | None, sysctls: tuple[tuple[str, str], ...]) -> None:
        for key, value in sysctls:
            if self.kernel.sysctl(ns, key) != value:
                self.kernel.set_sysctl(ns, key, value)
                self._note(ns, f"sysctl {key}={value}")


def apply(kernel: Kernel, spec: NetworkSpec) -> list[str]:
    """Make `kernel` match `spec`; return the changes made (empty when already matching)."""
    return Reconciler(kernel, spec).run()


def remove(kernel: Kernel, spec: NetworkSpec) -> list[str]:
    """Remove everything `spec` owns: its tagged links, routes and owned namespaces."""
    empty = NetworkSpec(
        owner=spec.owner,
        namespaces=tuple(
            Namespace(name=ns.name)
            for ns in spec.namespaces
            if not ns.owned and _exists(kernel, ns)
        ),
        namespace_prefix=spec.namespace_prefix,
    )
    return apply(kernel, empty)


def _exists(kernel: Kernel, ns: Namespace) -> bool:
    return ns.name is None or ns.name in kernel.namespaces()
