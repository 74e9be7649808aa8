"""The lab's network, as a `NetworkSpec` (docs/lab.md: the paper's experiment in namespaces).

            siteK (LAN client, K = 1..N)              every site: 192.168.0.10/24 on eth0
              eth0 ── veth ── lan0                     (--same-mac: one MAC for all)
                               │ br-lan (appliance agent)
                                 enrolled lab (discovery): site printer
                                 192.168.0.20 on eth0, br-lan 192.168.0.2 (relay)
                          applianceK
                               │ cjb-vx0  VXLAN VNI K ──► fd63:6a62::2
                              wan0  fd63:6a62:K::2/64
                               │ veth
                ┌──────────── apK  fd63:6a62:K::1/64
                │  internet   (IPv6 forwarding, ULA underlay only)
                └──────────── gw   fd63:6a62::1/64
                               │ veth
                              wan0 fd63:6a62::2/64
                            gateway   nft: VNI K only from fd63:6a62:K::2
                  vx-tenantK ─ worker (translator) ─ sl-tenantK ── veth ──┐
                  (IPv6 frames untranslated)       ─ nl-tenantK ── veth ──┤
                                                                         service
                  tenantK: fe80::c0a8:64 only   n-tenantK: fe80::c0a8:64 + own link-local
                          `cjb service serve` on [::]:80, tenant = scope id

Namespace names are `cjblab<runid>-<node>`; links live only inside them, so deleting the
namespaces deletes every link and nftables table of a run.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cjb.common.netlink import (
    Bridge,
    Existing,
    Link,
    Namespace,
    NetworkSpec,
    Route,
    Veth,
    VethPeer,
)

PREFIX = "cjblab"
NS_PATTERN = r"^cjblab[0-9a-f]{4}-"
WG_PREFIX = "wgl"  # + run id: every WireGuard interface of a lab run
LAN_ADDRESS = ipaddress.IPv4Interface("192.168.0.10/24")
SERVICE_IPV4 = ipaddress.IPv4Address("192.168.0.100")
# The service host's address on every tenant link, service and native alike.
SERVICE_LINK_LOCAL = ipaddress.IPv6Address(f"fe80::{SERVICE_IPV4}")
# Discovery (enrolled lab only): the appliance's own address on its LAN bridge (the
# relay announces from it; .2 is outside the agent's ARP-probed .100 and the client .10) and
# each site's LAN printer (a second address on the site's eth0: fe80::c0a8:14 in the cloud).
APPLIANCE_LAN_ADDRESS = ipaddress.IPv4Interface("192.168.0.2/24")
PRINTER_ADDRESS = ipaddress.IPv4Interface("192.168.0.20/24")
MULTICAST_V4 = ipaddress.IPv4Network("224.0.0.0/4")
# Room for VXLAN over IPv6 (70 bytes) around a 1500-byte LAN frame: the plain VXLAN
# transport needs it. VXLAN inside WireGuard never sends more than a 1500-byte path holds
# (common/tunnel_mtu.py), so the resilience suite can hide a 1500 black hole behind 1700.
UNDERLAY_MTU = 1700
LAN_MTU = 1500
VXLAN_PORT = 4789
SAME_MAC = "02:00:5e:00:00:0a"

NO_DAD = (("net/ipv6/conf/default/accept_dad", "0"), ("net/ipv6/conf/all/accept_dad", "0"))
LO = Link("lo", Existing())


def underlay_net(k: int) -> ipaddress.IPv6Network:
    """Tenant K's appliance link: fd63:6a62:K::/64; K = 0 is the gateway's link."""
    return ipaddress.IPv6Network(f"fd63:6a62:{k:x}::/64")


def underlay_addr(k: int, host: int) -> ipaddress.IPv6Address:
    return underlay_net(k)[host]


GATEWAY_UNDERLAY = underlay_addr(0, 2)
WIREGUARD_PORT = 51820
API_PORT = 8443


@dataclass(frozen=True, slots=True)
class LabNames:
    run_id: str

    @property
    def prefix(self) -> str:
        return f"{PREFIX}{self.run_id}-"

    def ns(self, node: str) -> str:
        return f"{self.prefix}{node}"

    def wg_ifname(self, node: str) -> str:
        """WireGuard interface names are machine-wide with wireguard-go (its socket
        directory is shared by every namespace): carry the run id. "wgl1a2bg", "wgl1a2ba3"."""
        suffix = "g" if node == "gateway" else "a" + node.removeprefix("appliance")
        return f"{WG_PREFIX}{self.run_id}{suffix}"

    def nodes(self, tenants: int) -> list[str]:
        sites = [f"site{k}" for k in range(1, tenants + 1)]
        appliances = [f"appliance{k}" for k in range(1, tenants + 1)]
        return [*sites, *appliances, "internet", "gateway", "service"]


def tenant_name(k: int) -> str:
    return f"tenant{k}"


def site_mac(k: int, same_mac: bool) -> str:
    return SAME_MAC if same_mac else f"02:00:5e:00:{k:02x}:0a"


def appliance_bridge() -> Link:
    """br-lan with the appliance's LAN address, IPv6 off (the agent's own default)."""
    return Link(
        "br-lan",
        Bridge(),
        mtu=LAN_MTU,
        addresses=(APPLIANCE_LAN_ADDRESS,),
        sysctls=(("ipv6.disable_ipv6", "1"),),
    )


def lab_spec(names: LabNames, tenants: int, same_mac: bool, discovery: bool = False) -> NetworkSpec:
    """`discovery`: the LAN side of discovery — a printer address on every site and an
    addressed `br-lan` in every appliance (which the enrolled agent adopts as it finds it:
    an existing bridge that is not its own keeps its addresses, as on the image)."""
    namespaces: list[Namespace] = []
    internet_links: list[Link] = [LO]
    for k in range(1, tenants + 1):
        site, appliance = names.ns(f"site{k}"), names.ns(f"appliance{k}")
        namespaces.append(
            Namespace(
                site,
                owned=True,
                sysctls=NO_DAD,
                links=(
                    LO,
                    Link(
                        "eth0",
                        Veth(peer="lan0", peer_netns=appliance),
                        mtu=LAN_MTU,
                        mac=site_mac(k, same_mac),
                        addresses=(LAN_ADDRESS, PRINTER_ADDRESS) if discovery else (LAN_ADDRESS,),
                        offloads_off=True,  # finished checksums before the translator reads
                    ),
                ),
                # No default route on a site: multicast senders need one for 224.0.0.0/4.
                routes=(Route(MULTICAST_V4, None, "eth0"),) if discovery else None,
            )
        )
        namespaces.append(
            Namespace(
                appliance,
                owned=True,
                sysctls=NO_DAD,
                links=(
                    LO,
                    # The agent puts lan0 on its bridge; the lab only creates and raises it.
                    Link("lan0", VethPeer(of="eth0"), mtu=LAN_MTU, offloads_off=True),
                    *((appliance_bridge(),) if discovery else ()),
                    Link(
                        "wan0",
                        VethPeer(of=f"ap{k}"),
                        mtu=UNDERLAY_MTU,
                        addresses=(ipaddress.IPv6Interface(f"{underlay_addr(k, 2)}/64"),),
                    ),
                ),
                routes=(
                    Route(ipaddress.IPv6Network("::/0"), underlay_addr(k, 1), "wan0"),
                    *((Route(MULTICAST_V4, None, "br-lan"),) if discovery else ()),
                ),
            )
        )
        internet_links.append(
            Link(
                f"ap{k}",
                Veth(peer="wan0", peer_netns=appliance),
                mtu=UNDERLAY_MTU,
                addresses=(ipaddress.IPv6Interface(f"{underlay_addr(k, 1)}/64"),),
            )
        )
    gateway = names.ns("gateway")
    internet_links.append(
        Link(
            "gw",
            Veth(peer="wan0", peer_netns=gateway),
            mtu=UNDERLAY_MTU,
            addresses=(ipaddress.IPv6Interface(f"{underlay_addr(0, 1)}/64"),),
        )
    )
    namespaces.append(
        Namespace(
            names.ns("internet"),
            owned=True,
            sysctls=(*NO_DAD, ("net/ipv6/conf/all/forwarding", "1")),
            links=tuple(internet_links),
        )
    )
    namespaces.append(
        Namespace(
            gateway,
            owned=True,
            sysctls=NO_DAD,
            links=(
                LO,
                Link(
                    "wan0",
                    VethPeer(of="gw"),
                    mtu=UNDERLAY_MTU,
                    addresses=(ipaddress.IPv6Interface(f"{GATEWAY_UNDERLAY}/64"),),
                ),
            ),
            routes=(Route(ipaddress.IPv6Network("::/0"), underlay_addr(0, 1), "wan0"),),
        )
    )
    namespaces.append(Namespace(names.ns("service"), owned=True, sysctls=NO_DAD, links=(LO,)))
    return NetworkSpec(owner="lab", namespaces=tuple(namespaces), namespace_prefix=names.prefix)
