"""The discovery ALG: mDNS and SSDP payloads rewritten as they cross the translator.

Sans-IO, applied by the translator core (to_service.py / to_lan.py call the hooks in
`udp`); mdns.py and ssdp.py do the rewriting, counters.py counts every outcome.
"""

from cjb.gateway.xlat.alg.counters import ALG_COUNTERS, snapshot
from cjb.gateway.xlat.alg.udp import MDNS_PORT, SSDP_PORT, to_lan_udp, to_service_udp

__all__ = [
    "ALG_COUNTERS",
    "MDNS_PORT",
    "SSDP_PORT",
    "snapshot",
    "to_lan_udp",
    "to_service_udp",
]
