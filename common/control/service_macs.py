"""The MAC addresses of a tenant's service-host links, as both gateway parts derive them.

The data plane gives each service link this MAC; the control API tells appliances the same
MACs (`cloud_macs`) so their LAN guard knows which unicast destinations belong to the
cloud. One function, so the two can never disagree.
"""

from __future__ import annotations

SERVICE_LINK = 1  # link numbers inside service_mac()
NATIVE_LINK = 2


def service_mac(vni: int, link: int) -> str:
    """A stable, locally administered MAC for a service-host link (02:c7:<VNI>:<link>).

    Stable across gateway restarts and link re-creation, so LAN clients' ARP caches (which
    hold the translated NDP answer's MAC) stay right when a tenant's link is rebuilt.
    """
    v = vni.to_bytes(3, "big")
    return f"02:c7:{v[0]:02x}:{v[1]:02x}:{v[2]:02x}:{link:02x}"
