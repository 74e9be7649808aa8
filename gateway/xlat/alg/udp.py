"""The translator's hook: UDP datagrams to or from the discovery ports get their payload
rewritten, with a new UDP length and a checksum computed over the new payload and the new
pseudo-header.

Returns None whenever the translator should carry on as without an ALG: not UDP, not a
discovery port, a fragment (the payload is incomplete; mDNS and SSDP messages fit one
packet), a length field that disagrees with the packet, a bad checksum (the translator's
incremental update keeps a bad checksum bad; a rewrite must never launder it), a zero IPv4
checksum under the "drop" policy (RFC 7915 §4.5 is the translator's call), a payload that is
not mDNS/SSDP, or nothing to rewrite. Every outcome is counted in `counters.ALG_COUNTERS`.

Size: the rewritten datagram must fit the outgoing link without fragmentation (mDNS: also
RFC 6762 §17's 9000 bytes). mDNS sheds additional records to fit; if it still does not fit,
or an SSDP rewrite does not fit, the datagram passes unchanged (counted): the peer then sees
an unusable address rather than nothing, and the translator never has to fragment.
"""

from __future__ import annotations

import struct

from cjb.common.packet.checksum import ones_sum
from cjb.gateway.xlat.alg import mdns, ssdp
from cjb.gateway.xlat.alg.counters import count
from cjb.gateway.xlat.config import UdpZeroChecksum, XlatConfig

PROTO_UDP = 17
MDNS_PORT = 5353  # RFC 6762 §3 (legacy unicast queries come from other ports, to 5353)
SSDP_PORT = 1900  # UDA §1.1.2
UDP_HEADER = struct.Struct("!HHHH")
IPV6_HEADER = 40
IPV4_HEADER = 20
_MOD = 0xFFFF


def to_service_udp(
    protocol: int,
    is_fragment: bool,
    l4: bytes | bytearray,
    old_addrs: bytes,
    new_addrs: bytes,
    cfg: XlatConfig,
) -> bytes | None:
    """LAN -> service. `old_addrs`/`new_addrs`: source + destination, IPv4 and IPv6."""
    # The translated packet must not need fragmenting: the IPv6 fragment threshold.
    limit = cfg.ipv6_fragment_threshold - IPV6_HEADER - UDP_HEADER.size
    zero_ok = cfg.udp_zero_checksum is UdpZeroChecksum.COMPUTE
    return _rewrite(
        protocol, is_fragment, l4, old_addrs, new_addrs, limit, zero_ok, to_service=True
    )


def to_lan_udp(
    protocol: int,
    is_fragment: bool,
    l4: bytes | bytearray,
    old_addrs: bytes,
    new_addrs: bytes,
    cfg: XlatConfig,
) -> bytes | None:
    """Service -> LAN. A zero checksum is invalid in IPv6 (RFC 8200 §8.1): never rewritten."""
    limit = cfg.lan_mtu - IPV4_HEADER - UDP_HEADER.size
    return _rewrite(protocol, is_fragment, l4, old_addrs, new_addrs, limit, False, to_service=False)


def _rewrite(
    protocol: int,
    is_fragment: bool,
    l4: bytes | bytearray,
    old_addrs: bytes,
    new_addrs: bytes,
    limit: int,
    zero_ok: bool,
    *,
    to_service: bool,
) -> bytes | None:
    if protocol != PROTO_UDP or is_fragment or len(l4) < UDP_HEADER.size:
        return None
    sport, dport, length, csum = UDP_HEADER.unpack_from(l4)
    if MDNS_PORT in (sport, dport):
        module = "mdns"
    elif SSDP_PORT in (sport, dport):
        module = "ssdp"
    else:
        return None
    if length != len(l4):
        count(f"{module}-udp-length-mismatch")
        return None
    if csum == 0:
        if not zero_ok:
            return None  # the translator's UDP-zero-checksum policy decides
    elif (ones_sum(l4) + ones_sum(old_addrs) + PROTO_UDP + length) % _MOD:
        count(f"{module}-bad-checksum")
        return None
    message = bytes(l4[UDP_HEADER.size :])
    if module == "mdns":
        m = (
            mdns.rewrite_to_service(message, limit)
            if to_service
            else mdns.rewrite_to_lan(message, limit)
        )
        count(m.outcome.value)
        payload = m.payload
    else:
        s = (
            ssdp.rewrite_to_service(message, limit)
            if to_service
            else ssdp.rewrite_to_lan(message, limit)
        )
        count(s.outcome.value)
        payload = s.payload
    if payload is None:
        return None
    new_length = UDP_HEADER.size + len(payload)
    header = UDP_HEADER.pack(sport, dport, new_length, 0)
    # RFC 768 / RFC 8200 §8.1: over the pseudo-header with the new addresses and length.
    total = ones_sum(header + payload) + ones_sum(new_addrs) + PROTO_UDP + new_length
    new_csum = _MOD - total % _MOD  # a zero sum is sent as 0xFFFF, never 0
    return header[:6] + new_csum.to_bytes(2, "big") + payload
