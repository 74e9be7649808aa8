"""The pyroute2 adapter: the only module that imports pyroute2.

pyroute2's stringly-typed messages are turned into `LinkState`, interfaces and `Route`s
here and go no further.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Callable
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError as PrNetlinkError

from cjb.common.netlink import offload
from cjb.common.netlink.kernel import LinkState, NetlinkError
from cjb.common.netlink.nsenter import (
    NETNS_RUN_DIR,
    create_netns,
    netns,
    netns_path,
    remove_netns,
)
from cjb.common.netlink.spec import (
    KIND_NAMES,
    RTPROT_CJB,
    Interface,
    Link,
    Route,
    TcBpf,
    Veth,
    Vxlan,
)

IFA_F_NODAD = 0x02
TC_H_CLSACT_INGRESS = 0xFFFFFFF2  # clsact's ingress hook ("ffff:fff2")
TC_PRIO = 1  # one fixed priority and handle: a second attach replaces, never stacks
TC_HANDLE = 1
ETH_P_ALL = 0x0003
IFF_UP = 0x1


class RealKernel:
    """Kernel adapter over pyroute2; one rtnetlink socket per namespace, opened lazily."""

    def __init__(self) -> None:
        self._sockets: dict[str | None, Any] = {}
        # (ns, name) -> ifindex, learned from link dumps: a lookup by name costs a `get`
        # whose reply pyroute2 decodes in full (1-2 ms), once per call otherwise. Every
        # dump refreshes it; a deletion or an ENODEV (a link recreated behind our back:
        # Linux does not reuse an index soon, so a stale one fails, never hits another
        # link) drops it.
        self._indexes: dict[tuple[str | None, str], int] = {}

    def close(self) -> None:
        for ipr in self._sockets.values():
            ipr.close()
        self._sockets.clear()

    def __enter__(self) -> RealKernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ipr(self, ns: str | None) -> Any:
        ipr = self._sockets.get(ns)
        if ipr is None:
            if ns is not None and not os.path.exists(netns_path(ns)):
                raise NetlinkError(f"network namespace {ns!r} does not exist")
            # Open the socket from inside the namespace (setns on this thread): pyroute2's
            # own netns= path forks helpers and even creates missing namespaces.
            with netns(ns):
                ipr = IPRoute()
            self._sockets[ns] = ipr
        return ipr

    def _call(self, ns: str | None, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PrNetlinkError as exc:
            code = exc.code
            if code == errno.ENODEV:
                self._indexes.clear()
            raise NetlinkError(
                f"{ns or '(current netns)'}: {what}: {os.strerror(code)} (errno {code})"
            ) from exc

    def _index(self, ns: str | None, name: str) -> int:
        known = self._indexes.get((ns, name))
        if known is not None:
            return known
        found = self._ipr(ns).link_lookup(ifname=name)
        if not found:
            raise NetlinkError(f"{ns or '(current netns)'}: no link named {name!r}")
        return int(found[0])

    # -- namespaces -------------------------------------------------------------------

    def namespaces(self) -> set[str]:
        try:
            return set(os.listdir(NETNS_RUN_DIR))
        except FileNotFoundError:
            return set()

    def add_namespace(self, name: str) -> None:
        create_netns(name)

    def del_namespace(self, name: str) -> None:
        self._indexes.clear()
        sock = self._sockets.pop(name, None)
        if sock is not None:
            sock.close()
        remove_netns(name)

    # -- links ------------------------------------------------------------------------

    def links(self, ns: str | None) -> dict[str, LinkState]:
        ipr = self._ipr(ns)
        msgs = list(self._call(ns, "dump links", ipr.link, "dump"))
        names = {m["index"]: m.get("ifname") for m in msgs}
        self._indexes = {k: v for k, v in self._indexes.items() if k[0] != ns}
        self._indexes.update(((ns, name), index) for index, name in names.items())
        return {m.get("ifname"): _link_state(m, names.get) for m in msgs}

    def link(self, ns: str | None, name: str) -> LinkState | None:
        ipr = self._ipr(ns)
        try:
            msgs = list(ipr.link("get", ifname=name))
        except PrNetlinkError as exc:
            if exc.code == errno.ENODEV:
                return None
            raise NetlinkError(f"{ns or '(current netns)'}: get link {name}: {exc}") from exc
        if not msgs:
            return None
        self._indexes[(ns, name)] = int(msgs[0]["index"])

        def master_name(index: int) -> str | None:
            with netns(ns):  # if_indextoname asks the thread's namespace
                try:
                    return socket.if_indextoname(index)
                except OSError:
                    return None

        return _link_state(msgs[0], master_name)

    def add_link(self, ns: str | None, link: Link, tag: str) -> None:
        ipr = self._ipr(ns)
        kind = link.kind
        args: dict[str, Any] = {"ifname": link.name, "ifalias": tag}
        if link.mtu is not None:
            args["mtu"] = link.mtu
        if isinstance(kind, Veth):
            args["kind"] = "veth"
            peer: dict[str, Any] = {"ifname": kind.peer}
            fd = None
            if kind.peer_netns is not None and kind.peer_netns != ns:
                fd = os.open(netns_path(kind.peer_netns), os.O_RDONLY)
                peer["net_ns_fd"] = fd
            args["peer"] = peer
            try:
                self._call(ns, f"add veth {link.name}", ipr.link, "add", **args)
            finally:
                if fd is not None:
                    os.close(fd)
            peer_ns = kind.peer_netns or ns
            # The peer end is ours too: tag it so a later spec can find and remove it.
            pipr = self._ipr(peer_ns)
            self._call(
                peer_ns,
                f"tag {kind.peer}",
                pipr.link,
                "set",
                index=self._index(peer_ns, kind.peer),
                ifalias=tag,
            )
            return
        if isinstance(kind, Vxlan):
            args.update(
                kind="vxlan",
                vxlan_id=kind.vni,
                vxlan_port=kind.port,
                vxlan_learning=0,
            )
            if kind.local.version == 6:
                args["vxlan_local6"] = str(kind.local)
                args["vxlan_group6"] = str(kind.remote)
            else:
                args["vxlan_local"] = str(kind.local)
                args["vxlan_group"] = str(kind.remote)
            if kind.underlay is not None:
                args["vxlan_link"] = self._index(ns, kind.underlay)
        else:
            args["kind"] = KIND_NAMES[type(kind)]
        self._call(ns, f"add {args['kind']} {link.name}", ipr.link, "add", **args)

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
        ipr = self._ipr(ns)
        args: dict[str, Any] = {"index": self._index(ns, name)}
        if mtu is not None:
            args["mtu"] = mtu
        if master is not None:
            args["master"] = self._index(ns, master)
        if nomaster:
            args["master"] = 0
        if up is not None:
            args["state"] = "up" if up else "down"
        if mac is not None:
            args["address"] = mac
        if alias is not None:
            args["ifalias"] = alias
        self._call(ns, f"set link {name} {sorted(args)}", ipr.link, "set", **args)

    def del_link(self, ns: str | None, name: str) -> None:
        ipr = self._ipr(ns)
        # A veth's peer goes too, perhaps in another namespace: forget every index.
        self._indexes.clear()
        found = ipr.link_lookup(ifname=name)
        if not found:
            return  # already gone, e.g. with its veth partner
        try:
            ipr.link("del", index=found[0])
        except PrNetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise NetlinkError(f"{ns}: delete {name}: {os.strerror(exc.code)}") from exc

    # -- addresses --------------------------------------------------------------------

    def addresses(self, ns: str | None, name: str) -> set[Interface]:
        ipr = self._ipr(ns)
        index = self._index(ns, name)
        out: set[Interface] = set()
        for m in self._call(ns, f"dump addresses of {name}", ipr.addr, "dump", index=index):
            out.add(ipaddress.ip_interface(f"{m.get('IFA_ADDRESS')}/{m['prefixlen']}"))
        return out

    def all_addresses(self, ns: str | None) -> dict[str, set[Interface]]:
        ipr = self._ipr(ns)
        # Names from if_nameindex(3) (in the namespace: it opens its socket there), not
        # from a link dump: pyroute2 decodes every attribute of every link (~0.4 ms each).
        with netns(ns):
            names = dict(socket.if_nameindex())
        out: dict[str, set[Interface]] = {}
        for m in self._call(ns, "dump addresses", ipr.addr, "dump"):
            name = names.get(m["index"])
            if name is not None:
                address = ipaddress.ip_interface(f"{m.get('IFA_ADDRESS')}/{m['prefixlen']}")
                out.setdefault(name, set()).add(address)
        return out

    def add_address(self, ns: str | None, name: str, address: Interface) -> None:
        ipr = self._ipr(ns)
        args: dict[str, Any] = {
            "index": self._index(ns, name),
            "address": str(address.ip),
            "prefixlen": address.network.prefixlen,
        }
        if address.version == 6:
            # Lab and service addresses are assigned, not discovered: no DAD delay.
            args["flags"] = IFA_F_NODAD
        self._call(ns, f"add address {address} on {name}", ipr.addr, "add", **args)

    def del_address(self, ns: str | None, name: str, address: Interface) -> None:
        ipr = self._ipr(ns)
        self._call(
            ns,
            f"delete address {address} on {name}",
            ipr.addr,
            "del",
            index=self._index(ns, name),
            address=str(address.ip),
            prefixlen=address.network.prefixlen,
        )

    # -- routes -----------------------------------------------------------------------

    def routes(self, ns: str | None) -> set[Route]:
        ipr = self._ipr(ns)
        names = {m["index"]: m.get("ifname") for m in ipr.link("dump")}
        out: set[Route] = set()
        for family in (socket.AF_INET, socket.AF_INET6):
            for m in self._call(ns, "dump routes", ipr.route, "dump", family=family):
                if m["proto"] != RTPROT_CJB:
                    continue
                dst = m.get("RTA_DST") or ("0.0.0.0" if family == socket.AF_INET else "::")  # noqa: S104 (a default route, not a bind)
                gw = m.get("RTA_GATEWAY")
                oif = m.get("RTA_OIF")
                out.add(
                    Route(
                        dst=ipaddress.ip_network(f"{dst}/{m['dst_len']}"),
                        gateway=ipaddress.ip_address(gw) if gw else None,
                        dev=names.get(oif) if oif else None,
                    )
                )
        return out

    def default_router(
        self, ns: str | None, dev: str | None = None
    ) -> ipaddress.IPv4Address | None:
        """Read-only: the gateway of the main table's IPv4 default route (any protocol, e.g.
        DHCP's), optionally only one leaving via `dev`; None when there is none."""
        ipr = self._ipr(ns)
        index = self._index(ns, dev) if dev is not None else None
        for m in self._call(ns, "dump routes", ipr.route, "dump", family=socket.AF_INET):
            gw = m.get("RTA_GATEWAY")
            if m["dst_len"] != 0 or gw is None or m.get("RTA_TABLE", 254) != 254:
                continue
            if index is None or m.get("RTA_OIF") == index:
                return ipaddress.IPv4Address(gw)
        return None

    def _route_args(self, ns: str | None, route: Route) -> dict[str, Any]:
        args: dict[str, Any] = {
            "dst": str(route.dst.network_address),
            "dst_len": route.dst.prefixlen,
            "proto": RTPROT_CJB,
            "family": socket.AF_INET if route.dst.version == 4 else socket.AF_INET6,
        }
        if route.gateway is not None:
            args["gateway"] = str(route.gateway)
        if route.dev is not None:
            args["oif"] = self._index(ns, route.dev)
        return args

    def add_route(self, ns: str | None, route: Route) -> None:
        ipr = self._ipr(ns)
        self._call(ns, f"add route {route}", ipr.route, "replace", **self._route_args(ns, route))

    def del_route(self, ns: str | None, route: Route) -> None:
        ipr = self._ipr(ns)
        self._call(ns, f"delete route {route}", ipr.route, "del", **self._route_args(ns, route))

    # -- sysctls and offloads (setns + /proc/sys, which follows the thread's netns) ------

    def sysctl(self, ns: str | None, key: str) -> str | None:
        with netns(ns):
            try:
                with open(f"/proc/sys/{key}") as f:
                    return f.read().strip()
            except FileNotFoundError:
                return None

    def set_sysctl(self, ns: str | None, key: str, value: str) -> None:
        with netns(ns):
            try:
                with open(f"/proc/sys/{key}", "w") as f:
                    f.write(value)
            except OSError as exc:
                raise NetlinkError(f"{ns}: sysctl {key}={value}: {exc.strerror}") from exc

    def offloads_on(self, ns: str | None, name: str) -> bool:
        with netns(ns):
            return bool(offload.offloads_on(name))

    def disable_offloads(self, ns: str | None, name: str) -> None:
        with netns(ns):
            offload.disable_offloads(name)

    def offloads_all_on(self, ns: str | None, name: str) -> bool:
        with netns(ns):
            return bool(offload.offloads_all_on(name))

    def enable_offloads(self, ns: str | None, name: str) -> None:
        with netns(ns):
            offload.enable_offloads(name)

    # -- tc BPF on ingress (clsact + cls_bpf direct-action) ---------------------------

    def tc_ingress(self, ns: str | None, name: str) -> str | None:
        ipr = self._ipr(ns)
        index = self._index(ns, name)
        try:
            msgs = list(ipr.get_filters(index=index, parent=TC_H_CLSACT_INGRESS))
        except PrNetlinkError as exc:
            if exc.code in (errno.EINVAL, errno.ENOENT):
                return None  # no clsact qdisc
            raise NetlinkError(f"{ns}: dump tc filters of {name}: {os.strerror(exc.code)}") from exc
        for m in msgs:
            opts = m.get("TCA_OPTIONS")
            if m.get("TCA_KIND") == "bpf" and opts is not None and opts.get("TCA_BPF_NAME"):
                return str(opts.get("TCA_BPF_NAME"))
        return None

    def _has_clsact(self, ipr: Any, index: int) -> bool:
        return any(m.get("TCA_KIND") == "clsact" for m in ipr.get_qdiscs(index=index))

    def set_tc_ingress(self, ns: str | None, name: str, prog: TcBpf) -> None:
        ipr = self._ipr(ns)
        index = self._index(ns, name)
        if not self._has_clsact(ipr, index):
            self._call(ns, f"add clsact qdisc on {name}", ipr.tc, "add", "clsact", index=index)
        self._call(
            ns,
            f"attach tc bpf {prog.filter_name} on {name}",
            ipr.tc,
            "replace-filter",
            "bpf",
            index=index,
            handle=TC_HANDLE,
            prio=TC_PRIO,
            protocol=ETH_P_ALL,
            fd=prog.prog_fd,
            name=prog.filter_name,
            parent=TC_H_CLSACT_INGRESS,
            classid=1,
            direct_action=True,
        )

    def del_tc_ingress(self, ns: str | None, name: str) -> None:
        ipr = self._ipr(ns)
        index = self._index(ns, name)
        if self._has_clsact(ipr, index):
            # The qdisc is ours (only our filters go on it): removing it removes them.
            self._call(ns, f"delete clsact qdisc on {name}", ipr.tc, "del", "clsact", index=index)


def _link_state(m: Any, name_of: Callable[[int], str | None]) -> LinkState:
    """One RTM_NEWLINK message as a LinkState; `name_of` resolves the master's index."""
    info = m.get("IFLA_LINKINFO")
    kind = info.get("IFLA_INFO_KIND") if info is not None else None
    vxlan = None
    if kind == "vxlan" and info is not None:
        data = info.get("IFLA_INFO_DATA")
        local = data.get("IFLA_VXLAN_LOCAL6") or data.get("IFLA_VXLAN_LOCAL") or ""
        remote = data.get("IFLA_VXLAN_GROUP6") or data.get("IFLA_VXLAN_GROUP") or ""
        vxlan = (
            int(data.get("IFLA_VXLAN_ID")),
            str(ipaddress.ip_address(local)) if local else "",
            str(ipaddress.ip_address(remote)) if remote else "",
            int(data.get("IFLA_VXLAN_PORT") or 0),
        )
    master = m.get("IFLA_MASTER")
    name = m.get("ifname")
    return LinkState(
        name=name,
        kind=str(kind) if kind in KIND_NAMES.values() else "",
        alias=m.get("IFLA_IFALIAS") or None,
        mtu=int(m.get("mtu")),
        master=name_of(master) if master else None,
        up=bool(m["flags"] & IFF_UP),
        mac=str(m.get("address") or ""),
        vxlan=vxlan,
        tx_errors=int((m.get("IFLA_STATS64") or {}).get("tx_errors", 0)),
    )
