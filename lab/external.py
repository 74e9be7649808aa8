"""An external site for a lab run: an appliance that is a machine, not a lab process.

    xlan (LAN client 192.168.0.10)                 xrouter ("customer router")
      tap-lan ═══ VM NIC 2 ┐                 ┌── VM NIC 1 ═══ tap-wan 192.168.0.1/24
                           │ the appliance   │                  fd63:6a62:e1::1/64
                           └──── br-lan ─────┘                  dnsmasq: DHCPv4 + RAs
                                                                  │ up0 fd63:6a62:e0::2/64
                                                    internet ── xr<run> fd63:6a62:e0::1/64

The machine (a QEMU VM booting the appliance image) gets its NICs from the two tap file
descriptors this module opens; it finds its addresses the way it would at a customer: DHCPv4
and SLAAC from the router, which routes the customer prefix to the lab internet and so to the
gateway. The namespaces carry the run's prefix, so `cjb lab down` removes them, dnsmasq with
them.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cjb.common.netlink import (
    Existing,
    Link,
    Namespace,
    NetworkSpec,
    Route,
    Veth,
    VethPeer,
    apply,
    netns,
)
from cjb.common.netlink.real import RealKernel
from cjb.lab import procs
from cjb.lab.state import LabState, ProcessRecord
from cjb.lab.topology import LO, NO_DAD, LabNames, underlay_addr, underlay_net

UPLINK = 0xE0  # router <-> internet: fd63:6a62:e0::/64 (lab tenants use 1..200)
CUSTOMER_LAN = 0xE1  # the customer LAN's IPv6 prefix, advertised for SLAAC
ROUTER_V4 = ipaddress.IPv4Interface("192.168.0.1/24")
CLIENT_V4 = ipaddress.IPv4Interface("192.168.0.10/24")
DHCP_FIRST, DHCP_LAST = "192.168.0.50", "192.168.0.99"
WAN_TAP, LAN_TAP = "tap-wan", "tap-lan"
MTU = 1500

# linux/if_tun.h
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


class ExternalSiteError(Exception):
    """The external site cannot be built; the message says what is missing."""


@dataclass(frozen=True)
class ExternalSite:
    router_ns: str
    lan_ns: str
    wan_fd: int  # hand these to the machine (QEMU -netdev tap,fd=N), then close them here
    lan_fd: int
    dnsmasq_log: Path

    def close(self) -> None:
        for fd in (self.wan_fd, self.lan_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def open_tap(ns: str, name: str) -> int:
    """A tap device `name` in `ns`, alive as long as the returned fd (or a copy) is open.
    The device belongs to the namespace of the thread that creates it (TUNSETIFF)."""
    with netns(ns):
        fd = os.open("/dev/net/tun", os.O_RDWR)
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI))
        except OSError:
            os.close(fd)
            raise
    os.set_inheritable(fd, True)
    return fd


def _spec(names: LabNames, taps: bool) -> NetworkSpec:
    router, lan, internet = names.ns("xrouter"), names.ns("xlan"), names.ns("internet")
    uplink = f"xr{names.run_id}"
    router_links: list[Link] = [
        LO,
        Link(
            "up0",
            VethPeer(of=uplink),
            mtu=MTU,
            addresses=(ipaddress.IPv6Interface(f"{underlay_addr(UPLINK, 2)}/64"),),
        ),
    ]
    lan_links: list[Link] = [LO]
    if taps:
        router_links.append(
            Link(
                WAN_TAP,
                Existing(),
                mtu=MTU,
                addresses=(
                    ROUTER_V4,
                    ipaddress.IPv6Interface(f"{underlay_addr(CUSTOMER_LAN, 1)}/64"),
                ),
            )
        )
        lan_links.append(Link(LAN_TAP, Existing(), mtu=MTU, addresses=(CLIENT_V4,)))
    return NetworkSpec(
        owner=f"lab-external-{names.run_id}",
        namespace_prefix=names.prefix + "x",
        namespaces=(
            Namespace(
                internet,
                links=(
                    Link(
                        uplink,
                        Veth(peer="up0", peer_netns=router),
                        mtu=MTU,
                        addresses=(ipaddress.IPv6Interface(f"{underlay_addr(UPLINK, 1)}/64"),),
                    ),
                ),
            ),
            Namespace(
                router,
                owned=True,
                links=tuple(router_links),
                sysctls=(*NO_DAD, ("net/ipv6/conf/all/forwarding", "1")),
                routes=(Route(ipaddress.IPv6Network("::/0"), underlay_addr(UPLINK, 1), "up0"),),
            ),
            Namespace(lan, owned=True, links=tuple(lan_links), sysctls=NO_DAD),
        ),
    )


def dnsmasq_config(run_dir: Path) -> str:
    """DHCPv4 on the customer LAN and router advertisements for SLAAC (RFC 4862), no DNS."""
    return "\n".join(
        [
            f"interface={WAN_TAP}",
            "bind-interfaces",
            "port=0",  # no DNS server: the gateway URL is an address
            "user=root",  # the lease file lives in the run directory
            f"dhcp-leasefile={run_dir / 'xrouter-dnsmasq.leases'}",
            f"dhcp-range={DHCP_FIRST},{DHCP_LAST},255.255.255.0,10m",
            f"dhcp-option=option:router,{ROUTER_V4.ip}",
            "enable-ra",
            f"dhcp-range={underlay_net(CUSTOMER_LAN).network_address},ra-only,64,10m",
            "log-dhcp",
            "",
        ]
    )


def add_external_site(state: LabState) -> ExternalSite:
    """Build the router and LAN namespaces of run `state`, open the two taps, start dnsmasq.
    The caller attaches the machine to the fds; the internet routes the customer prefix."""
    dnsmasq = shutil.which("dnsmasq")
    if dnsmasq is None:
        raise ExternalSiteError(
            "dnsmasq is missing: apt-get install -y --no-install-recommends dnsmasq-base"
        )
    names = LabNames(state.run_id)
    router, lan = names.ns("xrouter"), names.ns("xlan")
    state.namespaces.update(xrouter=router, xlan=lan)
    state.save()  # first: `down` finds the namespaces by prefix anyway
    with RealKernel() as kernel:
        apply(kernel, _spec(names, taps=False))
        wan_fd = open_tap(router, WAN_TAP)
        lan_fd = open_tap(lan, LAN_TAP)
        apply(kernel, _spec(names, taps=True))
    # The internet's way back to the customer prefix (its routes are nobody's spec).
    with netns(state.namespaces["internet"]):
        subprocess.run(
            ["ip", "-6", "route", "replace", str(underlay_net(CUSTOMER_LAN)),
             "via", str(underlay_addr(UPLINK, 2))],
            check=True, capture_output=True,
        )  # fmt: skip
    config = state.run_dir / "xrouter-dnsmasq.conf"
    config.write_text(dnsmasq_config(state.run_dir))
    log = state.run_dir / "logs" / "xrouter-dnsmasq.log"
    argv = [dnsmasq, "--keep-in-foreground", "--log-facility=-", f"--conf-file={config}"]
    pid = procs.spawn(router, argv, log)
    state.processes.append(ProcessRecord("xrouter", pid, argv, str(log)))
    state.save()
    return ExternalSite(router, lan, wan_fd, lan_fd, log)
