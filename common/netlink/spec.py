"""Kernel network state as data: what should exist, not how to make it so.

A `NetworkSpec` lists namespaces, their links (veth, bridge, vxlan, dummy, or an existing
link to adopt), addresses, routes and sysctls. `cjb.common.netlink.apply` makes the kernel
match it idempotently; every link it creates carries the spec's owner tag (IFLA_IFALIAS), so
removing an element from the spec removes exactly the objects that element owned.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IFNAMSIZ = 15  # Linux interface names: at most 15 bytes plus the terminating NUL

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Routes we install carry this rtm_protocol, so we can find (and remove) exactly ours.
RTPROT_CJB = 0xC7


class SpecError(ValueError):
    """The spec itself is inconsistent; the message names the element and the fix."""


@dataclass(frozen=True, slots=True)
class Veth:
    """A veth pair; the peer end is created in `peer_netns` (None: the same namespace)."""

    peer: str
    peer_netns: str | None = None


@dataclass(frozen=True, slots=True)
class VethPeer:
    """The far end of a `Veth` declared elsewhere in the spec: created with it, configured here."""

    of: str


@dataclass(frozen=True, slots=True)
class Bridge:
    pass


@dataclass(frozen=True, slots=True)
class Dummy:
    pass


@dataclass(frozen=True, slots=True)
class Vxlan:
    vni: int
    local: IPAddress
    remote: IPAddress
    port: int = 4789  # IANA VXLAN port (RFC 7348 §5)
    underlay: str | None = None  # the link the encapsulated packets leave on


@dataclass(frozen=True, slots=True)
class Existing:
    """A link someone else creates (a LAN NIC): configured if present, never created or deleted."""


@dataclass(frozen=True, slots=True)
class TcBpf:
    """A loaded BPF program on a link's tc ingress (clsact, direct action).

    `prog_fd` is the loader's handle; `prog_id` is the kernel's id of that program, which
    the filter's name records, so a second apply sees "already attached" and a new load
    (a new id) is a replace. Removed with its link, or when the spec drops it.
    """

    prog_fd: int
    prog_id: int
    label: str  # e.g. the program's name; shows in `tc filter show`

    @property
    def filter_name(self) -> str:
        return f"{TC_FILTER_PREFIX}{self.label}#{self.prog_id}"


TC_FILTER_PREFIX = "cjb:"  # our tc filters' names start with this; others are left alone

LinkKind = Veth | VethPeer | Bridge | Dummy | Vxlan | Existing

KIND_NAMES: dict[type, str] = {
    Veth: "veth",
    VethPeer: "veth",
    Bridge: "bridge",
    Dummy: "dummy",
    Vxlan: "vxlan",
}


@dataclass(frozen=True, slots=True)
class Link:
    name: str
    kind: LinkKind
    mtu: int | None = None
    master: str | None = None
    up: bool = True
    mac: str | None = None
    addresses: tuple[Interface, ...] = ()
    # Per-link sysctls, "ipv6.accept_ra" -> net/ipv6/conf/<link>/accept_ra,
    # "ipv6.neigh.ucast_solicit" -> net/ipv6/neigh/<link>/ucast_solicit. Applied before
    # the link goes up, so e.g. addr_gen_mode/disable_ipv6 take effect before any packet.
    sysctls: tuple[tuple[str, str], ...] = ()
    # Turn off tx checksum offload, TSO, GSO and GRO: frames read with AF_PACKET must be
    # complete (finished checksums, at most one MTU each).
    offloads_off: bool = False
    # The opposite: tx checksum, SG, TSO, GSO and GRO on, for readers that take GSO
    # super-frames with a vnet header (PACKET_VNET_HDR); turned on again if found off.
    offloads_on: bool = False
    # A BPF program on tc ingress (the kernel fast path); None removes ours if present.
    tc_ingress: TcBpf | None = None

    def __post_init__(self) -> None:
        if not 0 < len(self.name.encode()) <= IFNAMSIZ:
            raise SpecError(f"link name {self.name!r}: must be 1..{IFNAMSIZ} bytes")
        if isinstance(self.kind, Veth) and len(self.kind.peer.encode()) > IFNAMSIZ:
            raise SpecError(f"veth peer name {self.kind.peer!r}: at most {IFNAMSIZ} bytes")
        if self.offloads_off and self.offloads_on:
            raise SpecError(f"link {self.name!r}: offloads_off and offloads_on both set")


@dataclass(frozen=True, slots=True)
class Route:
    dst: ipaddress.IPv4Network | ipaddress.IPv6Network
    gateway: IPAddress | None = None
    dev: str | None = None


@dataclass(frozen=True, slots=True)
class Namespace:
    """A network namespace; name None is the namespace the caller runs in.

    `owned`: created by this spec and deleted when it leaves the spec. A namespace that is
    not owned (the service host, seen from the gateway) only has its tagged links managed.
    """

    name: str | None
    links: tuple[Link, ...] = ()
    # None: routes are someone else's business here; a tuple: exactly these (RTPROT_CJB).
    routes: tuple[Route, ...] | None = None
    sysctls: tuple[tuple[str, str], ...] = ()  # "net/ipv6/conf/all/forwarding" -> "1"
    owned: bool = False

    def link(self, name: str) -> Link:
        for link in self.links:
            if link.name == name:
                return link
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    """Everything one owner (the lab run, a gateway, an appliance) wants to exist."""

    owner: str
    namespaces: tuple[Namespace, ...] = ()
    # Owned namespaces are named with this prefix; stray ones with it are removed.
    namespace_prefix: str | None = None

    @property
    def tag(self) -> str:
        return f"cjb:{self.owner}"

    def namespace(self, name: str | None) -> Namespace:
        for ns in self.namespaces:
            if ns.name == name:
                return ns
        raise KeyError(name)

    def validate(self) -> None:
        names = [ns.name for ns in self.namespaces]
        if len(set(names)) != len(names):
            raise SpecError(f"spec {self.owner!r}: a namespace is listed twice: {names}")
        for ns in self.namespaces:
            if ns.owned and (
                ns.name is None
                or self.namespace_prefix is None
                or not ns.name.startswith(self.namespace_prefix)
            ):
                raise SpecError(
                    f"namespace {ns.name!r}: owned namespaces must start with the spec's "
                    f"namespace_prefix {self.namespace_prefix!r}"
                )
            links = [link.name for link in ns.links]
            if len(set(links)) != len(links):
                raise SpecError(f"namespace {ns.name!r}: a link is listed twice: {links}")
            for link in ns.links:
                if link.master is not None and link.master not in links:
                    raise SpecError(
                        f"link {link.name!r} in {ns.name!r}: master {link.master!r} is not in "
                        "the same namespace's spec"
                    )
                if isinstance(link.kind, VethPeer):
                    self._check_peer(ns, link)

    def _check_peer(self, ns: Namespace, link: Link) -> None:
        assert isinstance(link.kind, VethPeer)
        for other_ns in self.namespaces:
            for other in other_ns.links:
                kind = other.kind
                if (
                    isinstance(kind, Veth)
                    and other.name == link.kind.of
                    and kind.peer == link.name
                    and (kind.peer_netns or other_ns.name) == ns.name
                ):
                    return
        raise SpecError(
            f"veth peer {link.name!r} in {ns.name!r}: no Veth {link.kind.of!r} with that peer "
            "in the spec; declare the pair's other end"
        )
