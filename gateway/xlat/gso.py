"""GSO super-frames and partial checksums through the translator (virtio_net_hdr).

With PACKET_VNET_HDR (or a tap with IFF_VNET_HDR) every frame comes with a 10-byte
`struct virtio_net_hdr` (include/uapi/linux/virtio_net.h): a TCP stream arrives as
super-frames of up to 64 KB (gso_type TCPV4/TCPV6, gso_size = MSS) whose L4 checksum
field holds only the pseudo-header sum (flags NEEDS_CSUM, csum_start/csum_offset say
where the checksum goes). The kernel cuts such a frame into segments on output and
finishes each segment's checksum, so the headers are translated once per 64 KB.

This module translates exactly those frames, the ones the reference translator cannot
read (super-frames, partial checksums), and only when each segment is the reference fast
path's common case: unicast TCP/UDP, no IPv4 options, no IPv6 extension headers, no
fragments, each segment within the MTU. Everything else goes to the reference
translator, after this module finished the checksum (a partial frame) or cut the
super-frame into wire segments the way the kernel would (`gso_segment.py`). Frames
without GSO or NEEDS_CSUM go to the reference translator untouched.

The result differs from translating each segment with the reference only in the IPv4 ID
of IPv6->IPv4 segments: the kernel gives consecutive segments consecutive IDs (the
reference gives 0 when DF is set, RFC 6864 §4.1 leaves those free), and a short last
segment keeps the super-frame's DF bit (RFC 7915 §5.1 would clear it below 1260 bytes).
"""

from __future__ import annotations

import enum
import struct
from collections import Counter
from typing import NamedTuple

from cjb.common.packet.ipv4 import PROTO_TCP, PROTO_UDP, is_unicast_first_octet
from cjb.common.packet.transport import CHECKSUM_OFFSET
from cjb.gateway.xlat.addressing import FE80_96
from cjb.gateway.xlat.alg.udp import MDNS_PORT, SSDP_PORT
from cjb.gateway.xlat.fast_path import (
    ETH_IPV4,
    ETH_IPV6,
    ONES_MOD,
    V4_FIXED,
    V4_L4_OFF,
    V4_UP_TO_PROTOCOL,
    V6_FIXED,
    V6_L4_OFF,
)
from cjb.gateway.xlat.gso_segment import SegmentError, complete_checksum, segment
from cjb.gateway.xlat.icmp_map import DF_THRESHOLD
from cjb.gateway.xlat.result import Direction, Side
from cjb.gateway.xlat.to_lan import IdentificationSource
from cjb.gateway.xlat.translator import Translator

VNET_HDR_LEN = 10
# Native byte order: AF_PACKET and a tap without TUNSETVNETLE use the host's (legacy
# virtio) endianness.
VNET = struct.Struct("=BBHHHH")  # flags gso_type hdr_len gso_size csum_start csum_offset

F_NEEDS_CSUM = 1
F_DATA_VALID = 2
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80

NO_VNET = bytes(VNET_HDR_LEN)  # a complete frame: no GSO, checksums finished

_GSO_PROTO = {GSO_TCPV4: PROTO_TCP, GSO_TCPV6: PROTO_TCP, GSO_UDP_L4: PROTO_UDP}
_ALG_PORTS = frozenset((MDNS_PORT, SSDP_PORT))
_PORTS = struct.Struct("!HH")


class GsoDrop(enum.Enum):
    """Why a vnet frame was dropped before the reference translator saw it."""

    BAD_VNET_HEADER = "gso-bad-vnet-header"  # unknown gso_type, offsets outside the frame
    GSO_WITHOUT_CSUM = "gso-without-partial-checksum"  # the kernel never sends these
    GSO_MALFORMED = "gso-malformed"  # could not be cut into segments


class VnetEmit(NamedTuple):
    """A frame to send with its vnet header; `frame` is in pieces for sendmsg."""

    side: Side
    vnet: bytes
    frame: tuple[bytes | memoryview, ...]


class VnetResult(NamedTuple):
    emits: tuple[VnetEmit, ...] = ()
    drop: str | None = None  # a GsoDrop or reference DropReason value


class GsoCounters:
    """What took which path; the reference translator counts its own frames."""

    def __init__(self) -> None:
        self.superframes: Counter[Direction] = Counter()
        self.segments: Counter[Direction] = Counter()  # segments the super-frames stand for
        self.partial: Counter[Direction] = Counter()  # single frames, pseudo-header sum only
        self.software_segmented: Counter[Direction] = Counter()  # fallback: cut here
        self.checksum_completed: Counter[Direction] = Counter()  # fallback: finished here
        self.drops: Counter[GsoDrop] = Counter()

    def as_dict(self) -> dict[str, object]:
        def by_dir(c: Counter[Direction]) -> dict[str, int]:
            return {d.value: c[d] for d in Direction}

        return {
            "superframes": by_dir(self.superframes),
            "segments": by_dir(self.segments),
            "partial_checksum": by_dir(self.partial),
            "software_segmented": by_dir(self.software_segmented),
            "checksum_completed": by_dir(self.checksum_completed),
            "drops": {r.value: n for r, n in self.drops.items() if n},
        }


_unicast = is_unicast_first_octet


def pseudo_sum(addresses: bytes | memoryview, l4_len: int, proto: int, v6: bool) -> int:
    """The folded pseudo-header sum a NEEDS_CSUM checksum field holds (RFC 793 §3.1,
    RFC 8200 §8.1); `addresses` are both IPv4 addresses (8 bytes), and for IPv6 the
    fe80::/96 prefix words are added. Linux stores 0xFFFF, not 0, for a zero sum."""
    total = int.from_bytes(addresses, "big") + proto + (l4_len >> 16) + (l4_len & 0xFFFF)
    if v6:
        total += 2 * 0xFE80
    return total % ONES_MOD or ONES_MOD


def _out_vnet(
    flags: int, gso_type: int, l4_start: int, l4_hlen: int, gso_size: int, off: int
) -> bytes:
    return VNET.pack(flags, gso_type, l4_start + l4_hlen, gso_size, l4_start, off)


class VnetTranslator:
    """Frames with a vnet header in, frames with a vnet header out; wraps one reference
    `Translator` (which keeps its own counters and IPv4 ID source)."""

    def __init__(self, reference: Translator) -> None:
        self.reference = reference
        self.config = reference.config
        self.counters = GsoCounters()
        # One IPv4 ID sequence for both paths, so super-frame segments and frames the
        # reference translates never reuse each other's IDs (RFC 6864 §4.2).
        self._ids: IdentificationSource = reference._ids

    def translate(
        self, vnet: bytes | memoryview, frame: bytes | memoryview, direction: Direction
    ) -> VnetResult:
        if len(vnet) != VNET_HDR_LEN:
            return self._drop(GsoDrop.BAD_VNET_HEADER)
        flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = VNET.unpack(vnet)
        if not flags & F_NEEDS_CSUM:
            if gso_type != GSO_NONE:
                return self._drop(GsoDrop.GSO_WITHOUT_CSUM)
            return self._reference(frame, direction)
        if csum_start + csum_offset + 2 > len(frame):
            return self._drop(GsoDrop.BAD_VNET_HEADER)
        base = gso_type & ~GSO_ECN
        if base != GSO_NONE and (base not in _GSO_PROTO or gso_size == 0):
            return self._drop(GsoDrop.BAD_VNET_HEADER)
        try:
            if direction is Direction.TO_SERVICE:
                fast = self._to_service(frame, gso_type, gso_size, csum_start, csum_offset)
            else:
                fast = self._to_lan(frame, gso_type, gso_size, csum_start, csum_offset)
        except (IndexError, ValueError, struct.error):
            fast = None  # a frame too odd for the quick checks: the fallback names the drop
        if fast is not None:
            if base == GSO_NONE:
                self.counters.partial[direction] += 1
            else:
                self.counters.superframes[direction] += 1
                payload = len(frame) - fast[1]
                self.counters.segments[direction] += -(-payload // gso_size) if payload else 1
            return VnetResult((fast[0],))
        return self._fallback(frame, direction, gso_type, gso_size, csum_start, csum_offset)

    # -- the common case, translated once ----------------------------------------------

    def _to_service(
        self, frame: bytes | memoryview, gso_type: int, gso_size: int, cs: int, co: int
    ) -> tuple[VnetEmit, int] | None:
        if frame[12:14] != ETH_IPV4 or frame[14] != 0x45 or frame[0] & 1 or cs != V4_L4_OFF:
            return None
        _vihl, tos, total, _ident, flags_offset, ttl, proto = V4_UP_TO_PROTOCOL.unpack_from(
            frame, 14
        )
        base = gso_type & ~GSO_ECN
        if CHECKSUM_OFFSET.get(proto) != co or (base != GSO_NONE and _GSO_PROTO[base] != proto):
            return None
        if base not in (GSO_NONE, GSO_TCPV4, GSO_UDP_L4):
            return None
        if flags_offset & 0xBFFF or total + 14 > len(frame) or total < 20 + co + 2:
            return None
        if proto == 17 and not _ALG_PORTS.isdisjoint(_PORTS.unpack_from(frame, 34)):
            return None  # mDNS/SSDP: the reference applies the discovery ALG
        if not (_unicast(frame[26]) and _unicast(frame[30])):
            return None
        if int.from_bytes(frame[14:34], "big") % ONES_MOD:
            return None  # bad header checksum: the reference names the drop
        l4_hlen = (frame[46] >> 4) * 4 if proto == 6 else 8
        if (l4_hlen < 20 and proto == 6) or V4_L4_OFF + l4_hlen > 14 + total:
            return None
        seg_len = l4_hlen + gso_size if base != GSO_NONE else total - 20
        limit = self.config.service_mtu if flags_offset else self.config.ipv6_fragment_threshold
        if 40 + seg_len > limit:
            return None  # each segment must be the reference's common case
        plen = total - 20
        c = V4_L4_OFF + co
        check = pseudo_sum(frame[26:34], plen, proto, v6=True)
        out_type = gso_type if base != GSO_TCPV4 else GSO_TCPV6 | (gso_type & GSO_ECN)
        header = b"".join(
            (
                frame[:12],
                ETH_IPV6,
                V6_FIXED.pack(0x60000000 | (tos << 20), plen, proto, ttl),
                FE80_96,
                frame[26:30],
                FE80_96,
                frame[30:34],
                frame[V4_L4_OFF:c],
                check.to_bytes(2, "big"),
                frame[c + 2 : V4_L4_OFF + l4_hlen],
            )
        )
        vnet = _out_vnet(F_NEEDS_CSUM, out_type, V6_L4_OFF, l4_hlen, gso_size, co)
        payload = memoryview(frame)[V4_L4_OFF + l4_hlen : 14 + total]
        return VnetEmit(Side.SERVICE, vnet, (header, payload)), V4_L4_OFF + l4_hlen

    def _to_lan(
        self, frame: bytes | memoryview, gso_type: int, gso_size: int, cs: int, co: int
    ) -> tuple[VnetEmit, int] | None:
        if frame[12:14] != ETH_IPV6 or frame[0] & 1 or cs != V6_L4_OFF:
            return None
        vtf, plen, nh, hlim = V6_FIXED.unpack_from(frame, 14)
        base = gso_type & ~GSO_ECN
        if CHECKSUM_OFFSET.get(nh) != co or (base != GSO_NONE and _GSO_PROTO[base] != nh):
            return None
        if base not in (GSO_NONE, GSO_TCPV6, GSO_UDP_L4):
            return None
        if vtf >> 28 != 6 or plen + V6_L4_OFF > len(frame) or plen < co + 2:
            return None
        if nh == 17 and not _ALG_PORTS.isdisjoint(_PORTS.unpack_from(frame, 54)):
            return None
        if frame[22:34] != FE80_96 or frame[38:50] != FE80_96:
            return None
        if not (_unicast(frame[34]) and _unicast(frame[50])):
            return None
        l4_hlen = (frame[66] >> 4) * 4 if nh == 6 else 8
        if (l4_hlen < 20 and nh == 6) or l4_hlen > plen:
            return None
        seg_total = 20 + (l4_hlen + gso_size if base != GSO_NONE else plen)
        if seg_total > self.config.lan_mtu:
            return None  # the reference sends Packet Too Big for these
        total = plen + 20
        # RFC 7915 §5.1: DF only above 1260 bytes; the ID is needed when DF is clear, and
        # the kernel numbers the segments from it, so reserve one ID per segment.
        df = seg_total > DF_THRESHOLD
        ident = 0
        if not df:
            ident = self._ids.next()
            if base != GSO_NONE:
                for _ in range(-(-(plen - l4_hlen) // gso_size) - 1):
                    self._ids.next()
        header = V4_FIXED.pack(
            0x45,
            (vtf >> 20) & 0xFF,
            total,
            ident,
            0x4000 if df else 0,
            hlim,
            nh,
            0,
            bytes(frame[34:38]),
            bytes(frame[50:54]),
        )
        hcsum = ONES_MOD - int.from_bytes(header, "big") % ONES_MOD
        c = V6_L4_OFF + co
        check = pseudo_sum(header[12:20], plen, nh, v6=False)
        out_type = gso_type if base != GSO_TCPV6 else GSO_TCPV4 | (gso_type & GSO_ECN)
        head = b"".join(
            (
                frame[:12],
                ETH_IPV4,
                header[:10],
                hcsum.to_bytes(2, "big"),
                header[12:],
                frame[V6_L4_OFF:c],
                check.to_bytes(2, "big"),
                frame[c + 2 : V6_L4_OFF + l4_hlen],
            )
        )
        vnet = _out_vnet(F_NEEDS_CSUM, out_type, V4_L4_OFF, l4_hlen, gso_size, co)
        payload = memoryview(frame)[V6_L4_OFF + l4_hlen : V6_L4_OFF + plen]
        return VnetEmit(Side.LAN, vnet, (head, payload)), V6_L4_OFF + l4_hlen

    # -- everything else: make wire frames, then the reference --------------------------

    def _fallback(
        self,
        frame: bytes | memoryview,
        direction: Direction,
        gso_type: int,
        gso_size: int,
        cs: int,
        co: int,
    ) -> VnetResult:
        try:
            if gso_type & ~GSO_ECN == GSO_NONE:
                wire = [complete_checksum(bytes(frame), cs, co)]
                self.counters.checksum_completed[direction] += 1
            else:
                wire = segment(bytes(frame), gso_type & ~GSO_ECN, gso_size, cs, co)
                self.counters.software_segmented[direction] += 1
        except (SegmentError, IndexError, struct.error):  # SegmentError is a ValueError
            return self._drop(GsoDrop.GSO_MALFORMED)
        emits: list[VnetEmit] = []
        drop: str | None = None
        for piece in wire:
            result = self.reference.translate(piece, direction)
            emits += [VnetEmit(e.side, NO_VNET, (e.frame,)) for e in result.emits]
            if result.drop is not None:
                drop = result.drop.value
        return VnetResult(tuple(emits), drop)

    def _reference(self, frame: bytes | memoryview, direction: Direction) -> VnetResult:
        emits, drop = self.reference.translate(frame, direction)
        if len(emits) == 1 and drop is None:  # the common case, without a generator
            side, out = emits[0]
            return VnetResult((VnetEmit(side, NO_VNET, (out,)),))
        return VnetResult(
            tuple([VnetEmit(e.side, NO_VNET, (e.frame,)) for e in emits]),
            None if drop is None else drop.value,
        )

    def _drop(self, reason: GsoDrop) -> VnetResult:
        self.counters.drops[reason] += 1
        return VnetResult(drop=reason.value)
