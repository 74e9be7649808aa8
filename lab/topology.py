"""The lab's network, as a `NetworkSpec` (DESIGN §5: the paper's experiment in namespaces).

            siteK (LAN client, K = 1..N)              every site: 192.168.0.10/24 on eth0
              eth0 ── veth ── lan0                     (--same-mac: one MAC for all)
                               │ br-lan (appliance agent)
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
                          tenantK: fe80::c0a8:64 only    n-tenantK: own link-local
                          `cjb service serve` on [::]:80, tenant = scope id

Namespace names are `cjblab<runid>-<node>`; links live only inside them, so deleting the
namespaces deletes every link and nftables table of a run.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cjb.common.netlink import (
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
LAN_ADDRESS = ipaddress.IPv4Interface("192.168.0.10/24")
SERVICE_IPV4 = ipaddress.IPv4Address("192.168.0.100")
UNDERLAY_MTU = 1600  # room for VXLAN over IPv6 (70 bytes) around a 1500-byte LAN frame
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


@dataclass(frozen=True, slots=True)
class LabNames:
    run_id: str

    @property
    def prefix(self) -> str:
        return f"{PREFIX}{self.run_id}-"

    def ns(self, node: str) -> str:
        return f"{self.prefix}{node}"

    def nodes(self, tenants: int) -> list[str]:
        sites = [f"site{k}" for k in range(1, tenants + 1)]
        appliances = [f"appliance{k}" for k in range(1, tenants + 1)]
        return [*sites, *appliances, "internet", "gateway", "service"]


def tenant_name(k: int) -> str:
    return f"tenant{k}"


def site_mac(k: int, same_mac: bool) -> str:
    return SAME_MAC if same_mac else f"02:00:5e:00:{k:02x}:0a"


def lab_spec(names: LabNames, tenants: int, same_mac: bool) -> NetworkSpec:
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
                        addresses=(LAN_ADDRESS,),
                        offloads_off=True,  # finished checksums before the translator reads
                    ),
                ),
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
                    Link(
                        "wan0",
                        VethPeer(of=f"ap{k}"),
                        mtu=UNDERLAY_MTU,
                        addresses=(ipaddress.IPv6Interface(f"{underlay_addr(k, 2)}/64"),),
                    ),
                ),
                routes=(Route(ipaddress.IPv6Network("::/0"), underlay_addr(k, 1), "wan0"),),
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
