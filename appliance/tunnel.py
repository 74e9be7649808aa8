"""The seam between the agent and whatever carries the tenant's L2 segment to the gateway.

The agent asks a `TunnelBuilder` to make one L2 port exist on the LAN bridge for a
`TunnelRequest` (idempotently, every check interval), asks it how the tunnel is doing, and
to tear it down when the device is revoked. The production builder (WireGuard + VXLAN inside
it over the ULA overlay) lives with the WireGuard wrapper in common/wireguard; this module
also has `PlainVxlanBuilder`, VXLAN straight over the underlay to the gateway endpoint's
host (unencrypted: for labs and tests only, like the static-config agent).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cjb.common.control.protocol import TunnelConfig
from cjb.common.netlink import (
    Existing,
    Kernel,
    Link,
    Namespace,
    NetlinkError,
    NetworkSpec,
    Vxlan,
    apply,
    remove,
)

TUNNEL_OWNER = "appliance-tunnel"
NO_IPV6 = (("ipv6.disable_ipv6", "1"),)


class TunnelError(Exception):
    """The tunnel cannot be built from this request; the message says why."""


@dataclass(frozen=True, slots=True)
class TunnelRequest:
    config: TunnelConfig  # from the gateway (DeviceConfig.tunnel)
    wireguard_private_key_file: Path  # 0600, base64 raw key (`wg genkey` format)
    bridge: str  # the LAN bridge the L2 port must be a port of
    port_name: str  # the L2 port's name (the VXLAN link), e.g. "cjb-vx0"
    mtu: int  # LAN MTU: the L2 port carries full LAN frames
    underlay: str | None = None  # WAN device; None: the routing table decides

    def private_key(self) -> str:
        return self.wireguard_private_key_file.read_text().strip()


@dataclass(frozen=True, slots=True)
class TunnelStatus:
    up: bool
    on_bridge: bool
    port: str
    last_handshake_age: float | None = None  # seconds; None: unknown or never
    detail: str = ""
    counters: dict[str, int] = field(default_factory=dict)


class TunnelBuilder(Protocol):
    def ensure(self, request: TunnelRequest) -> list[str]:
        """Make the tunnel and its bridge port exist as requested; return what changed."""
        ...

    def reconnect(self, request: TunnelRequest) -> list[str]:
        """The gateway has been silent: re-resolve the endpoint and rebuild what is needed."""
        ...

    def status(self, request: TunnelRequest) -> TunnelStatus: ...

    def vxlan_source(
        self, request: TunnelRequest
    ) -> tuple[str | None, ipaddress.IPv4Address | ipaddress.IPv6Address]:
        """(the interface VXLAN must arrive on, None: any; the one source it may come from)."""
        ...

    def remove(self) -> list[str]:
        """Remove every object this builder made (revocation, shutdown of the tunnel)."""
        ...


def endpoint_host(endpoint: str) -> str:
    """ "[fd00::1]:51820" -> "fd00::1"; "gw.example:51820" -> "gw.example"."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit():
        raise TunnelError(f"gateway endpoint {endpoint!r}: expected HOST:PORT")
    return host.removeprefix("[").removesuffix("]")


def resolve(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise TunnelError(f"cannot resolve gateway endpoint {host!r}: {exc.strerror}") from None
    return ipaddress.ip_address(infos[0][4][0])


def lan_port(request: TunnelRequest, vxlan: Vxlan) -> Link:
    """The tunnel's L2 port (a VXLAN link) on the LAN bridge, carrying full LAN frames."""
    return Link(
        request.port_name,
        vxlan,
        mtu=request.mtu,
        master=request.bridge,
        sysctls=NO_IPV6,
        offloads_off=True,
    )


def remove_links(kernel: Kernel, ns: str | None) -> list[str]:
    """Remove every link a tunnel builder made in `ns` (all owned by TUNNEL_OWNER)."""
    return remove(kernel, NetworkSpec(TUNNEL_OWNER, (Namespace(ns),)))


class PlainVxlanBuilder:
    """VXLAN (RFC 7348) to the gateway endpoint's host over the underlay, no encryption."""

    def __init__(self, kernel: Kernel, ns: str | None = None) -> None:
        self.kernel = kernel
        self.ns = ns
        self._remote: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None

    def _local(
        self, request: TunnelRequest, remote: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        if request.underlay is None:
            raise TunnelError("the plain VXLAN tunnel needs the WAN device (config `wan`)")
        for iface in sorted(self.kernel.addresses(self.ns, request.underlay), key=str):
            if iface.version == remote.version and not iface.ip.is_link_local:
                return iface.ip
        raise TunnelError(
            f"{request.underlay} has no IPv{remote.version} address to reach {remote} from"
        )

    def spec(self, request: TunnelRequest) -> NetworkSpec:
        if self._remote is None:
            self._remote = resolve(endpoint_host(request.config.gateway_endpoint))
        remote = self._remote
        vxlan = Vxlan(
            vni=request.config.vni,
            local=self._local(request, remote),
            remote=remote,
            port=request.config.vxlan_port,
            underlay=request.underlay,
        )
        links = (Link(request.bridge, Existing()), lan_port(request, vxlan))
        return NetworkSpec(TUNNEL_OWNER, (Namespace(self.ns, links),))

    def ensure(self, request: TunnelRequest) -> list[str]:
        try:
            return apply(self.kernel, self.spec(request))
        except NetlinkError as exc:
            hint = ""
            if "mtu" in str(exc):
                # RFC 7348 §4.3: VXLAN adds 50 bytes over IPv4, 70 over IPv6; no fragmenting.
                hint = (
                    f" (the underlay {request.underlay} needs an MTU of at least LAN MTU "
                    f"{request.mtu} + 50 over IPv4 / + 70 over IPv6)"
                )
            raise TunnelError(f"{exc}{hint}") from exc

    def reconnect(self, request: TunnelRequest) -> list[str]:
        self._remote = None  # re-resolve: the gateway's address may have moved
        return self.ensure(request)

    def vxlan_source(
        self, request: TunnelRequest
    ) -> tuple[str | None, ipaddress.IPv4Address | ipaddress.IPv6Address]:
        if self._remote is None:
            self._remote = resolve(endpoint_host(request.config.gateway_endpoint))
        return None, self._remote

    def status(self, request: TunnelRequest) -> TunnelStatus:
        state = self.kernel.links(self.ns).get(request.port_name)
        if state is None:
            return TunnelStatus(False, False, request.port_name, detail="port missing")
        return TunnelStatus(
            up=state.up,
            on_bridge=state.master == request.bridge,
            port=request.port_name,
            detail=f"plain VXLAN vni {request.config.vni} (unencrypted)",
        )

    def remove(self) -> list[str]:
        return remove_links(self.kernel, self.ns)
