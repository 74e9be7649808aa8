"""Bonjour/UPnP across the junction, appliance side.

relay.py   DiscoveryRelay: announces the tenant's cloud services on the LAN (zeroconf, SSDP)
           and runs the WAN gate; the agent starts it and tells it about the tunnel
gate.py    sans-IO gate: allow-list, rate limit, loop guard on discovery frames
policy.py  the allow-list, token bucket and loop guard values
ssdp.py    sans-IO SSDP advertiser (M-SEARCH answers, NOTIFY alive/byebye)
nft_rules.py  the bridge rules that send discovery UDP through the gate
"""

from cjb.appliance.discovery.policy import DEFAULT_SERVICE_TYPES, DEFAULT_UPNP_TYPES, AllowList
from cjb.appliance.discovery.relay import DiscoveryRelay, RelayConfig, RelayError

__all__ = [
    "DEFAULT_SERVICE_TYPES",
    "DEFAULT_UPNP_TYPES",
    "AllowList",
    "DiscoveryRelay",
    "RelayConfig",
    "RelayError",
]
