"""Tenants -> the kernel objects the gateway owns (a `NetworkSpec` for cjb.common.netlink).

Per tenant, in the gateway's namespace:
  vx-<t>  VXLAN port, VNI = tenant's, to the tenant appliance's underlay address
  sl-<t>  service link, veth into the service host (far end named after the tenant)
  nl-<t>  optional native IPv6 link, veth into the service host (far end n-<tenant>)
With WireGuard the gateway's WireGuard interface carries the overlay /64, and each
vx-<t> runs from the gateway's overlay address to the appliance's, inside WireGuard.
Gateway-side ports carry no addresses and have IPv6 disabled: the gateway's own stack
must never speak on a tenant's segment (no RS, MLD or DAD), only the worker does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from cjb.common.control.service_macs import NATIVE_LINK, SERVICE_LINK, service_mac
from cjb.common.netlink import (
    Existing,
    Link,
    Namespace,
    NetworkSpec,
    TcBpf,
    Veth,
    VethPeer,
    Vxlan,
)
from cjb.common.tunnel_mtu import service_mtu_for
from cjb.gateway.dataplane.config import GatewayConfig, TenantSpec

OWNER = "gw"

# No stack on the gateway side of a tenant port.
PORT_SYSCTLS = (
    ("ipv6.disable_ipv6", "1"),
    ("ipv6.accept_ra", "0"),
    ("ipv6.autoconf", "0"),
)

# The service host's neighbour cache for a LAN's clients: anything on the LAN can rewrite
# an entry (an NS's source link-layer option, an override NA: RFC 4861 §7.2.3, §7.2.5), so
# one spoofed ARP leaves the client's entry on a wrong MAC. With the kernel's defaults
# (5 s DELAY, then 3 unicast probes to that MAC and no multicast re-probe) the client's
# next connection waited 7-11 s. Probe after 1 s, once unicast, then multicast
# (RFC 7048 §3): the real client answers and is served within about 2 s.
NEIGHBOUR_RECOVERY = (
    ("ipv6.neigh.delay_first_probe_time", "1"),
    ("ipv6.neigh.ucast_solicit", "1"),
    ("ipv6.neigh.mcast_resolicit", "3"),
)

# The service host's end of a service link: exactly fe80::<service IPv4>, no MAC-derived
# link-local (it would source NS that ARP cannot express, docs/platform.md), no RA/SLAAC.
SERVICE_SYSCTLS = (
    ("ipv6.addr_gen_mode", "1"),
    ("ipv6.accept_ra", "0"),
    ("ipv6.autoconf", "0"),
    ("ipv6.accept_dad", "0"),
    *NEIGHBOUR_RECOVERY,
)

# The service host's end of a native link: its kernel-generated link-local address plus
# fe80::<service IPv4>, so a LAN client reaches the service at the same address on either
# path. The same address on the service link is no duplicate: each link is its own zone
# (RFC 4007), and the scope ID tells the application which link a peer came in on.
NATIVE_SYSCTLS = (
    ("ipv6.accept_ra", "0"),
    ("ipv6.autoconf", "0"),
    ("ipv6.accept_dad", "0"),
    *NEIGHBOUR_RECOVERY,
)


def _vnet(t: TenantSpec) -> bool:
    """Offloads off for the one-frame-per-syscall worker; on (GRO/TSO super-frames) for
    its PACKET_VNET_HDR mode, on both ends of each link."""
    return t.userspace_io == "packet-vnet"


def tenant_links(cfg: GatewayConfig, t: TenantSpec) -> tuple[list[Link], list[Link]]:
    """(gateway-side links, service-side links) of one tenant."""
    gw = [
        Link(
            t.tunnel_port,
            Vxlan(
                vni=t.vni,
                local=cfg.underlay_address,
                remote=t.appliance,
                port=cfg.underlay_port,
                underlay=cfg.underlay_device,
            ),
            mtu=t.lan_mtu,
            sysctls=PORT_SYSCTLS,
            offloads_off=not _vnet(t),
            offloads_on=_vnet(t),
        ),
        Link(
            t.service_port,
            Veth(peer=t.service_ifname, peer_netns=cfg.service_netns),
            mtu=service_mtu_for(t.lan_mtu),
            sysctls=PORT_SYSCTLS,
            offloads_off=not _vnet(t),
            offloads_on=_vnet(t),
        ),
    ]
    svc = [
        Link(
            t.service_ifname,
            VethPeer(of=t.service_port),
            mtu=service_mtu_for(t.lan_mtu),
            mac=service_mac(t.vni, SERVICE_LINK),
            addresses=(t.service_address,),
            sysctls=SERVICE_SYSCTLS,
            offloads_off=not _vnet(t),
            offloads_on=_vnet(t),
        )
    ]
    if t.native_ipv6:
        gw.append(
            Link(
                t.native_port,
                Veth(peer=t.native_ifname, peer_netns=cfg.service_netns),
                mtu=t.lan_mtu,
                sysctls=PORT_SYSCTLS,
                offloads_off=not _vnet(t),
                offloads_on=_vnet(t),
            )
        )
        svc.append(
            Link(
                t.native_ifname,
                VethPeer(of=t.native_port),
                mtu=t.lan_mtu,
                mac=service_mac(t.vni, NATIVE_LINK),
                addresses=(t.service_address,),
                sysctls=NATIVE_SYSCTLS,
                offloads_off=not _vnet(t),
                offloads_on=_vnet(t),
            )
        )
    return gw, svc


def wireguard_link(cfg: GatewayConfig) -> list[Link]:
    """The WireGuard interface, adopted (wireguard-go or the kernel creates it, not netlink).

    Listed first, so it has its overlay address and is up before the VXLAN ports that use
    that address as their local end come up.
    """
    if cfg.wireguard is None:
        return []
    wg = cfg.wireguard
    return [Link(wg.ifname, Existing(), mtu=wg.mtu, addresses=(wg.address,))]


def gateway_spec(cfg: GatewayConfig, tc_ingress: Mapping[str, TcBpf] | None = None) -> NetworkSpec:
    """`tc_ingress`: the kernel fast path's programs by gateway port name; ports
    not named there carry none (a program left from before is detached)."""
    gw_links: list[Link] = wireguard_link(cfg)
    svc_links: list[Link] = []
    for t in cfg.tenants:
        gw, svc = tenant_links(cfg, t)
        gw_links += gw
        svc_links += svc
    if tc_ingress:
        gw_links = [replace(lk, tc_ingress=tc_ingress.get(lk.name)) for lk in gw_links]
    if cfg.service_netns is None:
        return NetworkSpec(OWNER, (Namespace(None, tuple(gw_links + svc_links)),))
    return NetworkSpec(
        OWNER,
        (
            Namespace(None, tuple(gw_links)),
            Namespace(cfg.service_netns, tuple(svc_links)),
        ),
    )
