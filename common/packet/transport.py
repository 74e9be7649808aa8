"""UDP (RFC 768) and TCP (RFC 9293 §3.1) headers; both checksums cover a pseudo-header."""

from __future__ import annotations

import struct
from typing import NamedTuple

from cjb.common.packet.errors import Invalid, malformed, truncated
from cjb.common.packet.ipv4 import PROTO_TCP, PROTO_UDP

UDP_HEADER_LEN = 8
TCP_MIN_HEADER_LEN = 20

# protocol -> offset of the checksum field from the start of the transport header
CHECKSUM_OFFSET = {PROTO_TCP: 16, PROTO_UDP: 6}

_UDP = struct.Struct("!HHHH")
_TCP = struct.Struct("!HHIIBBHHH")


class UdpHeader(NamedTuple):
    src_port: int
    dst_port: int
    length: int  # header + data, as the sender wrote it
    checksum: int  # 0 means "none" in IPv4 only (RFC 768; RFC 8200 §8.1)


class TcpHeader(NamedTuple):
    src_port: int
    dst_port: int
    seq: int
    ack: int
    header_len: int  # bytes, options included
    flags: int  # the low 8 flag bits (CWR..FIN)
    window: int
    checksum: int
    urgent: int
    options: bytes


def parse_udp(data: bytes) -> UdpHeader | Invalid:
    if len(data) < UDP_HEADER_LEN:
        return truncated("udp header", UDP_HEADER_LEN, len(data))
    header = UdpHeader(*_UDP.unpack_from(data))
    if header.length < UDP_HEADER_LEN:
        return malformed(f"udp: length {header.length} < 8")
    return header


def build_udp(src_port: int, dst_port: int, length: int, checksum: int = 0) -> bytes:
    return _UDP.pack(src_port, dst_port, length, checksum)


def parse_tcp(data: bytes) -> TcpHeader | Invalid:
    if len(data) < TCP_MIN_HEADER_LEN:
        return truncated("tcp header", TCP_MIN_HEADER_LEN, len(data))
    sport, dport, seq, ack, offset_byte, flags, window, csum, urgent = _TCP.unpack_from(data)
    header_len = (offset_byte >> 4) * 4
    if header_len < TCP_MIN_HEADER_LEN:
        return malformed(f"tcp: data offset {header_len} < 20")
    if len(data) < header_len:
        return truncated("tcp options", header_len, len(data))
    options = data[TCP_MIN_HEADER_LEN:header_len]
    return TcpHeader(sport, dport, seq, ack, header_len, flags, window, csum, urgent, options)


def build_tcp(header: TcpHeader) -> bytes:
    """The header with its options (padded to 32 bits); checksum as given."""
    options = header.options + bytes(-len(header.options) % 4)
    offset_byte = ((TCP_MIN_HEADER_LEN + len(options)) // 4) << 4
    fixed = _TCP.pack(
        header.src_port,
        header.dst_port,
        header.seq,
        header.ack,
        offset_byte,
        header.flags,
        header.window,
        header.checksum,
        header.urgent,
    )
    return fixed + options
