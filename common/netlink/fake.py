"""An in-memory kernel for fast tests: applies changes to dicts, renders them as text.

`render()` is sorted and stable, so tests compare it against a golden string; `calls`
counts mutations, so tests can assert that a second apply changed nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from cjb.common.netlink.kernel import LinkState, NetlinkError
from cjb.common.netlink.spec import KIND_NAMES, Interface, Link, Route, TcBpf, Veth, Vxlan

_CURRENT = "(current)"
GENERATED_MAC_PREFIX = "02:00:00:00:00:"  # not rendered: they depend on creation order


@dataclass
class _Ns:
    links: dict[str, LinkState] = field(default_factory=dict)
    addresses: dict[str, set[Interface]] = field(default_factory=dict)
    routes: set[Route] = field(default_factory=set)
    sysctls: dict[str, str] = field(default_factory=dict)
    offloads_off: set[str] = field(default_factory=set)
    tc_ingress: dict[str, str] = field(default_factory=dict)


class FakeKernel:
    def __init__(self) -> None:
        self._ns: dict[str, _Ns] = {_CURRENT: _Ns()}
        self.calls = 0
        self._mac_seq = 0
        # Veth partners: (ns, name) <-> (ns, name).
        self._pairs: dict[tuple[str, str], tuple[str, str]] = {}

    def _get(self, ns: str | None) -> _Ns:
        try:
            return self._ns[ns or _CURRENT]
        except KeyError:
            raise NetlinkError(f"network namespace {ns!r} does not exist") from None

    def _next_mac(self) -> str:
        self._mac_seq += 1
        return f"{GENERATED_MAC_PREFIX}{self._mac_seq:02x}"

    def namespaces(self) -> set[str]:
        return {name for name in self._ns if name != _CURRENT}

    def add_namespace(self, name: str) -> None:
        self.calls += 1
        self._ns[name] = _Ns()

    def del_namespace(self, name: str) -> None:
        self.calls += 1
        del self._ns[name]
        # Veth pairs die with either end: remove partners living in other namespaces.
        for end, partner in list(self._pairs.items()):
            if end[0] == name:
                self._remove_end(*partner)
                self._pairs.pop(end, None)

    def _remove_end(self, ns: str, name: str) -> None:
        space = self._ns.get(ns)
        if space is not None:
            space.links.pop(name, None)
            space.addresses.pop(name, None)
            space.offloads_off.discard(name)
            space.tc_ingress.pop(name, None)
            # The kernel drops a link's conf/<link>/ and neigh/<link>/ sysctls with the link.
            gone = (f"/conf/{name}/", f"/neigh/{name}/")
            for key in [k for k in space.sysctls if any(g in k for g in gone)]:
                del space.sysctls[key]
        self._pairs.pop((ns, name), None)

    def links(self, ns: str | None) -> dict[str, LinkState]:
        return dict(self._get(ns).links)

    def link(self, ns: str | None, name: str) -> LinkState | None:
        return self._get(ns).links.get(name)

    def add_link(self, ns: str | None, link: Link, tag: str) -> None:
        self.calls += 1
        space = self._get(ns)
        if link.name in space.links:
            raise NetlinkError(f"{ns}: link {link.name} exists")
        kind = link.kind
        vxlan = None
        if isinstance(kind, Vxlan):
            vxlan = (kind.vni, str(kind.local), str(kind.remote), kind.port)
        state = LinkState(
            name=link.name,
            kind=KIND_NAMES[type(kind)],
            alias=tag,
            mtu=link.mtu or 1500,
            master=None,
            up=False,
            mac=self._next_mac(),
            vxlan=vxlan,
        )
        space.links[link.name] = state
        if isinstance(kind, Veth):
            peer_ns = kind.peer_netns or ns or _CURRENT
            peer_space = self._get(peer_ns)
            peer_space.links[kind.peer] = replace(state, name=kind.peer, mac=self._next_mac())
            a, b = (ns or _CURRENT, link.name), (peer_ns, kind.peer)
            self._pairs[a] = b
            self._pairs[b] = a

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
    ) -> None:
        self.calls += 1
        space = self._get(ns)
        state = space.links[name]
        if master is not None and master not in space.links:
            raise NetlinkError(f"{ns}: master {master} does not exist")
        state = replace(
            state,
            mtu=mtu if mtu is not None else state.mtu,
            master=None if nomaster else (master if master is not None else state.master),
            up=up if up is not None else state.up,
            mac=mac if mac is not None else state.mac,
            alias=alias if alias is not None else state.alias,
        )
        space.links[name] = state

    def del_link(self, ns: str | None, name: str) -> None:
        self.calls += 1
        key = (ns or _CURRENT, name)
        partner = self._pairs.get(key)
        self._remove_end(*key)
        if partner is not None:
            self._remove_end(*partner)
        # Ports of a deleted bridge lose their master.
        space = self._get(ns)
        for port, state in list(space.links.items()):
            if state.master == name:
                space.links[port] = replace(state, master=None)

    def addresses(self, ns: str | None, name: str) -> set[Interface]:
        return set(self._get(ns).addresses.get(name, set()))

    def all_addresses(self, ns: str | None) -> dict[str, set[Interface]]:
        return {name: set(a) for name, a in self._get(ns).addresses.items()}

    def add_address(self, ns: str | None, name: str, address: Interface) -> None:
        self.calls += 1
        self._get(ns).addresses.setdefault(name, set()).add(address)

    def del_address(self, ns: str | None, name: str, address: Interface) -> None:
        self.calls += 1
        self._get(ns).addresses[name].discard(address)

    def routes(self, ns: str | None) -> set[Route]:
        return set(self._get(ns).routes)

    def add_route(self, ns: str | None, route: Route) -> None:
        self.calls += 1
        self._get(ns).routes.add(route)

    def del_route(self, ns: str | None, route: Route) -> None:
        self.calls += 1
        self._get(ns).routes.discard(route)

    def sysctl(self, ns: str | None, key: str) -> str | None:
        return self._get(ns).sysctls.get(key)

    def set_sysctl(self, ns: str | None, key: str, value: str) -> None:
        self.calls += 1
        self._get(ns).sysctls[key] = value

    def offloads_on(self, ns: str | None, name: str) -> bool:
        return name not in self._get(ns).offloads_off

    def disable_offloads(self, ns: str | None, name: str) -> None:
        self.calls += 1
        self._get(ns).offloads_off.add(name)

    def offloads_all_on(self, ns: str | None, name: str) -> bool:
        return name not in self._get(ns).offloads_off

    def enable_offloads(self, ns: str | None, name: str) -> None:
        self.calls += 1
        self._get(ns).offloads_off.discard(name)

    def tc_ingress(self, ns: str | None, name: str) -> str | None:
        return self._get(ns).tc_ingress.get(name)

    def set_tc_ingress(self, ns: str | None, name: str, prog: TcBpf) -> None:
        self.calls += 1
        space = self._get(ns)
        if name not in space.links:
            raise NetlinkError(f"{ns}: no link named {name!r}")
        space.tc_ingress[name] = prog.filter_name

    def del_tc_ingress(self, ns: str | None, name: str) -> None:
        self.calls += 1
        self._get(ns).tc_ingress.pop(name, None)

    def render(self) -> str:
        """The whole state as sorted text, one object per line (MACs only when set)."""
        lines: list[str] = []
        for ns_name in sorted(self._ns):
            space = self._ns[ns_name]
            lines.append(f"netns {ns_name}")
            for key, value in sorted(space.sysctls.items()):
                lines.append(f"  sysctl {key}={value}")
            for name in sorted(space.links):
                s = space.links[name]
                extra = ""
                if s.vxlan is not None:
                    vni, local, remote, port = s.vxlan
                    extra = f" vni={vni} local={local} remote={remote} port={port}"
                offl = " offloads=off" if name in space.offloads_off else ""
                if not s.mac.startswith(GENERATED_MAC_PREFIX):
                    offl = f" mac={s.mac}{offl}"
                lines.append(
                    f"  link {name} kind={s.kind} mtu={s.mtu} master={s.master or '-'} "
                    f"{'up' if s.up else 'down'} alias={s.alias or '-'}{extra}{offl}"
                )
                for address in sorted(space.addresses.get(name, set()), key=str):
                    lines.append(f"    addr {address}")
                if name in space.tc_ingress:
                    lines.append(f"    tc ingress bpf {space.tc_ingress[name]}")
            for route in sorted(space.routes, key=str):
                lines.append(
                    f"  route {route.dst} via {route.gateway or '-'} dev {route.dev or '-'}"
                )
        return "\n".join(lines) + "\n"
