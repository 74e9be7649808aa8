"""What the kernel does to a GSO super-frame on output, in Python: cut it into wire
segments and finish their checksums.

Used as the fallback for super-frames the one-pass translation in gso.py does not take
(IPv4 options, IPv6 extension headers, segments above the MTU ...): the segments then go
through the reference translator one by one. Also the oracle of the GSO property test.
The rules follow the kernel's GSO (net/ipv4/tcp_offload.c, af_inet.c, ipv6/ip6_offload.c,
udp_offload.c): TCP sequence numbers advance by the MSS, CWR stays on the first segment
only, FIN and PSH on the last only; IPv4 IDs count up from the super-frame's; lengths and
header checksums are rewritten; every L4 checksum is computed in full (RFC 1071).
"""

from __future__ import annotations

import struct

GSO_TCPV4 = 1
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
_MOD = 0xFFFF
_TCP_CWR = 0x80
_TCP_FIN_PSH = 0x09


class SegmentError(ValueError):
    """The super-frame cannot be cut: its headers do not say where segments start."""


def _sum(data: bytes) -> int:
    n = int.from_bytes(data, "big")
    if len(data) & 1:
        n <<= 8
    return n % _MOD


def _pseudo(l3: bytes, l4_len: int, proto: int) -> int:
    if l3[0] >> 4 == 4:
        return _sum(l3[12:20]) + proto + l4_len
    return _sum(l3[8:40]) + proto + (l4_len >> 16) + (l4_len & 0xFFFF)


def _finish(folded: int, udp: bool) -> int:
    """The field value as the kernel writes it: a sum of all ones complements to 0 for
    TCP; UDP sends 0xFFFF instead, 0 meaning "no checksum" (RFC 768)."""
    value = (_MOD - folded) % _MOD
    return value or (_MOD if udp else 0)


def complete_checksum(frame: bytes, csum_start: int, csum_offset: int) -> bytes:
    """Finish a NEEDS_CSUM frame: the field holds the pseudo-header sum, so summing from
    csum_start to the end of the IP packet and complementing gives the real checksum
    (virtio 1.x §5.1.6.2). Ethernet padding after the packet is not summed."""
    c = csum_start + csum_offset
    if not 14 <= csum_start < c + 2 <= len(frame):
        raise SegmentError("checksum offsets outside the frame")
    end = len(frame)
    if frame[12:14] == b"\x08\x00" and len(frame) >= 18:
        end = min(end, 14 + int.from_bytes(frame[16:18], "big"))
    elif frame[12:14] == b"\x86\xdd" and len(frame) >= 20:
        end = min(end, 54 + int.from_bytes(frame[18:20], "big"))
    if end < c + 2:
        raise SegmentError("IP length ends before the checksum field")
    value = _finish(_sum(frame[csum_start:end]), udp=csum_offset == 6)
    return frame[:c] + value.to_bytes(2, "big") + frame[c + 2 :]


def segment(
    frame: bytes, gso_type: int, gso_size: int, csum_start: int, csum_offset: int
) -> list[bytes]:
    """Cut an Ethernet super-frame (TCPV4, TCPV6 or UDP_L4) into complete wire frames."""
    if gso_size <= 0 or csum_start < 34 or len(frame) < csum_start + 8:
        raise SegmentError("bad gso_size or csum_start")
    eth, l3, l4 = frame[:14], frame[14:csum_start], frame[csum_start:]
    version = l3[0] >> 4
    if version == 4:
        if len(l3) != (l3[0] & 0x0F) * 4 or len(l3) < 20:
            raise SegmentError("IPv4 header length disagrees with csum_start")
        proto = l3[9]
        total = int.from_bytes(l3[2:4], "big")
        ident = int.from_bytes(l3[4:6], "big")
        end = 14 + total
    elif version == 6 and len(l3) >= 40:
        proto = 17 if gso_type == GSO_UDP_L4 else 6  # after any extension headers
        end = 54 + int.from_bytes(l3[4:6], "big")
        ident = 0
    else:
        raise SegmentError("not IPv4 or IPv6")
    if end > len(frame) or end < csum_start + 8:
        raise SegmentError("IP length disagrees with the frame")
    l4 = frame[csum_start:end]
    if gso_type in (GSO_TCPV4, GSO_TCPV6):
        if proto != 6 or csum_offset != 16 or len(l4) < 20:
            raise SegmentError("TCP GSO without a TCP header")
        hlen = (l4[12] >> 4) * 4
        if hlen < 20:
            raise SegmentError("TCP data offset below 5 words (RFC 9293 §3.1)")
    elif gso_type == GSO_UDP_L4:
        if proto != 17 or csum_offset != 6:
            raise SegmentError("UDP GSO without a UDP header")
        hlen = 8
    else:
        raise SegmentError(f"gso_type {gso_type} not supported")
    if hlen < 8 or hlen > len(l4):
        raise SegmentError("L4 header longer than the frame")
    head, payload = l4[:hlen], l4[hlen:]
    chunks = [payload[i : i + gso_size] for i in range(0, len(payload), gso_size)] or [b""]
    seq = int.from_bytes(head[4:8], "big")
    out: list[bytes] = []
    for i, chunk in enumerate(chunks):
        l4_len = hlen + len(chunk)
        if gso_type == GSO_UDP_L4:
            h = head[:4] + struct.pack("!HH", l4_len, 0)
        else:
            flags = head[13]
            if i:
                flags &= ~_TCP_CWR
            if i != len(chunks) - 1:
                flags &= ~_TCP_FIN_PSH
            s = (seq + i * gso_size) & 0xFFFFFFFF
            h = head[:4] + s.to_bytes(4, "big") + head[8:13] + bytes((flags,)) + head[14:16]
            h += b"\x00\x00" + head[18:]
        if version == 4:
            n = len(l3) + l4_len
            ip = l3[:2] + struct.pack("!HH", n, (ident + i) & 0xFFFF) + l3[6:10] + b"\0\0"
            ip += l3[12:]
            ip = ip[:10] + (_MOD - _sum(ip)).to_bytes(2, "big") + ip[12:]
        else:
            ip = l3[:4] + (len(l3) - 40 + l4_len).to_bytes(2, "big") + l3[6:]
        body = h + chunk
        value = _finish((_pseudo(ip, l4_len, proto) + _sum(body)) % _MOD, udp=proto == 17)
        c = csum_offset
        out.append(eth + ip + body[:c] + value.to_bytes(2, "big") + body[c + 2 :])
    return out
