"""What a LAN sends that is never for the cloud: dropped before the translator, counted.

  unicast-not-for-cloud       unicast to a MAC that is none of the tenant's service-host
                              links: a LAN's unknown unicast (a bridge flooding a MAC it has
                              not learned, a device sending to random MACs). The service host
                              would discard it, but only after it cost a translation and
                              filled the service link: a flooding LAN buried its own service.
  arp-claims-service-address  ARP whose sender address is the service address. The address
                              is the cloud's (the appliance probed it free, RFC 5227 §2.1), so
                              a LAN device announcing or answering for it is in conflict with
                              it (RFC 5227 §2.4) or spoofing it; the service host ignores such
                              claims anyway, and the count tells the operator which site has
                              the conflict.

Frames from the service side and the native link are not checked.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cjb.common.control.service_macs import NATIVE_LINK, SERVICE_LINK, service_mac
from cjb.gateway.dataplane.config import TenantSpec

NOT_FOR_CLOUD = "unicast-not-for-cloud"
CLAIMS_SERVICE = "arp-claims-service-address"
_ARP_SENDER_IP = slice(28, 32)  # Ethernet (14) + htype, ptype, hlen, plen, oper, sha (14)


@dataclass(frozen=True, slots=True)
class LanGuard:
    cloud_macs: frozenset[bytes]  # empty: no unicast check
    service_ipv4: bytes = b""  # 4 bytes; empty: no ARP check

    def check(self, frame: bytes | memoryview) -> str | None:
        """The drop reason for a frame from the tunnel, or None to pass it on."""
        if len(frame) < 14:
            return None  # no Ethernet header: the translator names it (truncated)
        # The I/G bit (IEEE 802, first octet's least significant bit): 0 = unicast.
        if not frame[0] & 1 and self.cloud_macs and bytes(frame[:6]) not in self.cloud_macs:
            return NOT_FOR_CLOUD
        if (
            frame[12] == 0x08
            and frame[13] == 0x06  # ARP
            and self.service_ipv4
            and bytes(frame[_ARP_SENDER_IP]) == self.service_ipv4
        ):
            return CLAIMS_SERVICE
        return None


def cloud_macs(t: TenantSpec) -> frozenset[bytes]:
    """The MACs a LAN's unicast may be addressed to: the tenant's service-host links."""
    links = (SERVICE_LINK, NATIVE_LINK) if t.native_ipv6 else (SERVICE_LINK,)
    return frozenset(bytes.fromhex(service_mac(t.vni, link).replace(":", "")) for link in links)


def lan_guard(t: TenantSpec) -> LanGuard:
    return LanGuard(cloud_macs(t), ipaddress.IPv4Address(t.service_ipv4).packed)
