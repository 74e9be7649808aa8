"""The appliance agent: enroll, build the tunnel, keep it healthy, filter the WAN
(docs/architecture.md).

lifecycle.py       sans-IO enrollment/heartbeat state machine (time and randomness passed in)
backoff.py         exponential backoff with full jitter
control_client.py  HTTPS adapter (stdlib): operator CA first, then the gateway CA + mTLS
keys.py            factory identity, WireGuard key, device TLS key + CSR (0600, atomic)
store.py           the enrolled state on disk, replaced atomically
arp_probe.py       sans-IO RFC 5227 prober; arp_probe_io.py its AF_PACKET adapter
lan.py             LAN facts: prefix/router from the bridge, a free service address
tunnel.py          the TunnelBuilder seam + the plain-VXLAN builder (labs/tests)
tunnel_wireguard.py  the WireGuard + VXLAN builder (production)
wan_filter.py      nftables bridge table: what may cross into the tunnel
enrolled.py        the enrolled-mode agent loop (the IO adapter around lifecycle.py)
agent.py           `cjb appliance run`: picks static or enrolled mode, wires the real world
config.py          the agent's config file
"""
