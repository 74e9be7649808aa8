"""The common case, TCP/UDP unicast without options, extension headers or fragments,
translated with a handful of slices and one struct call per frame.

Each function returns None for anything else, and the full translator (to_service.py,
to_lan.py) handles it. The output is byte-identical to the full path's; a property test
holds the two together. With both addresses in fe80::/96 the pseudo-header sum changes
by exactly 2 * 0xfe80, so the checksum update is one constant (RFC 1624).
"""

from __future__ import annotations

import struct

from cjb.common.packet.ethernet import ETH_HEADER_LEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6
from cjb.common.packet.ipv4 import IPV4_HEADER_LEN, is_unicast_first_octet
from cjb.common.packet.ipv6 import IPV6_HEADER_LEN
from cjb.common.packet.transport import CHECKSUM_OFFSET
from cjb.gateway.xlat.addressing import FE80_96
from cjb.gateway.xlat.alg.udp import MDNS_PORT, SSDP_PORT
from cjb.gateway.xlat.config import XlatConfig
from cjb.gateway.xlat.icmp_map import DF_THRESHOLD
from cjb.gateway.xlat.result import Emit, Side, XlatResult
from cjb.gateway.xlat.to_lan import IdentificationSource

# The common case's header layouts, shared with gso.py (which translates the same case
# for GSO super-frames).
V4_UP_TO_PROTOCOL = struct.Struct("!BBHHHBB")
V6_FIXED = struct.Struct("!IHBB")  # version/class/flow, payload length, next header, hops
V4_FIXED = struct.Struct("!BBHHHBBH4s4s")  # a whole IPv4 header without options
ONES_MOD = 0xFFFF
V4_L4_OFF = ETH_HEADER_LEN + IPV4_HEADER_LEN  # 34: the transport header, no IPv4 options
V6_L4_OFF = ETH_HEADER_LEN + IPV6_HEADER_LEN  # 54: the transport header, no extension headers
ETH_IPV6 = ETHERTYPE_IPV6.to_bytes(2, "big")
ETH_IPV4 = ETHERTYPE_IPV4.to_bytes(2, "big")
_DELTA = (2 * 0xFE80) % ONES_MOD  # fe80::/96 prefix words, once per address
_ALG_PORTS = frozenset(p.to_bytes(2, "big") for p in (MDNS_PORT, SSDP_PORT))
_unicast = is_unicast_first_octet


def ipv4_to_service_fast(frame: bytes, cfg: XlatConfig) -> XlatResult | None:
    if frame[12:14] != b"\x08\x00" or len(frame) < 34 or frame[14] != 0x45 or frame[0] & 1:
        return None
    _vihl, tos, total, _ident, flags_offset, ttl, proto = V4_UP_TO_PROTOCOL.unpack_from(frame, 14)
    off = CHECKSUM_OFFSET.get(proto)
    if off is None or flags_offset & 0xBFFF or total + 14 > len(frame) or total < 20 + off + 2:
        return None
    if proto == 17 and (frame[34:36] in _ALG_PORTS or frame[36:38] in _ALG_PORTS):
        return None  # mDNS/SSDP: the full path applies the discovery ALG
    if not (_unicast(frame[26]) and _unicast(frame[30])):
        return None
    if int.from_bytes(frame[14:34], "big") % ONES_MOD:
        return None  # bad header checksum: let the full path name the drop
    plen = total - 20
    limit = cfg.service_mtu if flags_offset else cfg.ipv6_fragment_threshold
    if 40 + plen > limit:
        return None
    c = 34 + off
    csum = (frame[c] << 8) | frame[c + 1]
    if csum == 0:
        return None  # UDP without checksum: policy decides, in the full path
    folded = (ONES_MOD - csum + _DELTA) % ONES_MOD
    new = ONES_MOD - folded if folded else (0xFFFF if proto == 17 else 0)
    out = b"".join(
        (
            frame[:12],
            ETH_IPV6,
            V6_FIXED.pack(0x60000000 | (tos << 20), plen, proto, ttl),
            FE80_96,
            frame[26:30],
            FE80_96,
            frame[30:34],
            frame[34:c],
            new.to_bytes(2, "big"),
            frame[c + 2 : 14 + total],
        )
    )
    return XlatResult((Emit(Side.SERVICE, out),))


def ipv6_to_lan_fast(frame: bytes, cfg: XlatConfig, ids: IdentificationSource) -> XlatResult | None:
    if frame[12:14] != b"\x86\xdd" or len(frame) < 54 or frame[0] & 1:
        return None
    vtf, plen, nh, hlim = V6_FIXED.unpack_from(frame, 14)
    off = CHECKSUM_OFFSET.get(nh)
    if off is None or vtf >> 28 != 6 or plen + 54 > len(frame) or plen < off + 2:
        return None
    if nh == 17 and (frame[54:56] in _ALG_PORTS or frame[56:58] in _ALG_PORTS):
        return None
    if frame[22:34] != FE80_96 or frame[38:50] != FE80_96:
        return None
    if not (_unicast(frame[34]) and _unicast(frame[50])):
        return None
    total = plen + 20
    if total > cfg.lan_mtu:
        return None
    c = 54 + off
    csum = (frame[c] << 8) | frame[c + 1]
    if csum == 0:
        return None
    folded = (ONES_MOD - csum + ONES_MOD - _DELTA) % ONES_MOD
    new = ONES_MOD - folded if folded else (0xFFFF if nh == 17 else 0)
    df = total > DF_THRESHOLD
    header = V4_FIXED.pack(
        0x45,
        (vtf >> 20) & 0xFF,
        total,
        0 if df else ids.next(),
        0x4000 if df else 0,
        hlim,
        nh,
        0,
        frame[34:38],
        frame[50:54],
    )
    hsum = int.from_bytes(header, "big") % ONES_MOD
    hcsum = ONES_MOD - hsum
    out = b"".join(
        (
            frame[:12],
            ETH_IPV4,
            header[:10],
            hcsum.to_bytes(2, "big"),
            header[12:],
            frame[54:c],
            new.to_bytes(2, "big"),
            frame[c + 2 : 54 + plen],
        )
    )
    return XlatResult((Emit(Side.LAN, out),))
