"""PROXY protocol version 2 (HAProxy's spec, "proxy-protocol.txt" §2.2), sans-IO.

A front proxy prepends one binary header to the upstream stream carrying the original
addresses. IPv6 addresses in it have no scope id, so `%ifname` — the tenant key — would be
lost; CJB adds two TLVs in the spec's custom range 0xE0-0xEF (§2.2.8, "PP2_TYPE_MIN_CUSTOM"):

- ``0xE0`` PP2_TYPE_CJB_TENANT: the tenant name, UTF-8 (as in the tenant directory).
- ``0xE1`` PP2_TYPE_CJB_IFNAME: the service-host interface the client came in on.

`parse` never raises on input: it returns `NeedMore`, `Invalid(reason)` or `Parsed`. It is
bounded: a header longer than `max_length` bytes is `Invalid` before anything is buffered.
Only trust a PROXY header from a peer you know is your front (listen on loopback).
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass
from enum import IntEnum

from cjb.common.tenant_directory import IFNAME_PATTERN, TENANT_PATTERN

SIGNATURE = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"
FIXED_LENGTH = 16
VERSION = 2
DEFAULT_MAX_LENGTH = 1024

PP2_TYPE_NOOP = 0x04
PP2_TYPE_CJB_TENANT = 0xE0
PP2_TYPE_CJB_IFNAME = 0xE1

_FIXED = struct.Struct("!12sBBH")
_TLV = struct.Struct("!BH")


class Command(IntEnum):
    LOCAL = 0x0
    PROXY = 0x1


class Family(IntEnum):
    UNSPEC = 0x0
    INET = 0x1
    INET6 = 0x2
    UNIX = 0x3


class Transport(IntEnum):
    UNSPEC = 0x0
    STREAM = 0x1
    DGRAM = 0x2


# §2.2: length of the address block per family.
_ADDRESS_LENGTH = {Family.UNSPEC: 0, Family.INET: 12, Family.INET6: 36, Family.UNIX: 216}


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    command: Command
    family: Family = Family.UNSPEC
    transport: Transport = Transport.UNSPEC
    src_addr: str | None = None
    src_port: int = 0
    dst_addr: str | None = None
    dst_port: int = 0
    tlvs: tuple[tuple[int, bytes], ...] = ()

    def tlv(self, kind: int) -> bytes | None:
        for t, value in self.tlvs:
            if t == kind:
                return value
        return None

    @property
    def tenant(self) -> str | None:
        value = self.tlv(PP2_TYPE_CJB_TENANT)
        return None if value is None else value.decode()  # validated by parse

    @property
    def ifname(self) -> str | None:
        value = self.tlv(PP2_TYPE_CJB_IFNAME)
        return None if value is None else value.decode()


@dataclass(frozen=True, slots=True)
class NeedMore:
    pass


@dataclass(frozen=True, slots=True)
class Invalid:
    reason: str


@dataclass(frozen=True, slots=True)
class Parsed:
    header: ProxyHeader
    consumed: int


ParseResult = NeedMore | Invalid | Parsed


def cjb_tlvs(tenant: str, ifname: str) -> tuple[tuple[int, bytes], ...]:
    return ((PP2_TYPE_CJB_TENANT, tenant.encode()), (PP2_TYPE_CJB_IFNAME, ifname.encode()))


def stream6(
    src_addr: str,
    src_port: int,
    dst_addr: str,
    dst_port: int,
    tlvs: tuple[tuple[int, bytes], ...] = (),
) -> ProxyHeader:
    """A PROXY header for a TCP connection over IPv6 (what the front sends)."""
    return ProxyHeader(
        Command.PROXY, Family.INET6, Transport.STREAM, src_addr, src_port, dst_addr, dst_port, tlvs
    )


def encode(header: ProxyHeader) -> bytes:
    """The header's bytes. Raises ValueError on a header we would not send (our own bug)."""
    body = bytearray()
    family, transport = header.family, header.transport
    if header.command is Command.PROXY and family in (Family.INET, Family.INET6):
        version = 4 if family is Family.INET else 6
        src = ipaddress.ip_address(header.src_addr or "")
        dst = ipaddress.ip_address(header.dst_addr or "")
        if src.version != version or dst.version != version:
            raise ValueError(f"addresses do not match family {family.name}")
        body += src.packed + dst.packed + struct.pack("!HH", header.src_port, header.dst_port)
    elif family is not Family.UNSPEC:
        raise ValueError(f"cannot encode family {family.name} with command {header.command.name}")
    for kind, value in header.tlvs:
        if not 0 <= kind <= 0xFF or len(value) > 0xFFFF:
            raise ValueError(f"TLV {kind:#x} out of range")
        body += _TLV.pack(kind, len(value)) + value
    if len(body) > 0xFFFF:
        raise ValueError("header too long")
    ver_cmd = (VERSION << 4) | header.command
    fam_proto = (family << 4) | transport
    return _FIXED.pack(SIGNATURE, ver_cmd, fam_proto, len(body)) + bytes(body)


def parse(
    data: bytes | bytearray | memoryview, *, max_length: int = DEFAULT_MAX_LENGTH
) -> ParseResult:
    """Parse a header at the start of `data`; never raises on any input."""
    buf = bytes(data[: max(max_length, FIXED_LENGTH)])
    head = buf[: len(SIGNATURE)]
    if SIGNATURE[: len(head)] != head:
        return Invalid("not a PROXY v2 header (bad signature)")
    if len(buf) < FIXED_LENGTH:
        return NeedMore()
    _, ver_cmd, fam_proto, length = _FIXED.unpack_from(buf)
    if ver_cmd >> 4 != VERSION:
        return Invalid(f"unsupported PROXY protocol version {ver_cmd >> 4}")
    try:
        command = Command(ver_cmd & 0x0F)
        family = Family(fam_proto >> 4)
        transport = Transport(fam_proto & 0x0F)
    except ValueError:
        return Invalid(f"unknown command or address family ({ver_cmd:#04x} {fam_proto:#04x})")
    total = FIXED_LENGTH + length
    if total > max_length:
        return Invalid(f"header of {total} bytes exceeds the limit of {max_length}")
    if len(buf) < total:
        return NeedMore()
    block = buf[FIXED_LENGTH:total]
    addr_len = _ADDRESS_LENGTH[family]
    if len(block) < addr_len:
        return Invalid(f"address block too short for {family.name}")
    src = dst = None
    sport = dport = 0
    if family in (Family.INET, Family.INET6):
        n = 4 if family is Family.INET else 16
        src = str(ipaddress.ip_address(block[:n]))
        dst = str(ipaddress.ip_address(block[n : 2 * n]))
        sport, dport = struct.unpack_from("!HH", block, 2 * n)
    tlvs = _parse_tlvs(block[addr_len:])
    if isinstance(tlvs, Invalid):
        return tlvs
    if command is Command.LOCAL:
        # §2.2: for LOCAL the receiver must ignore the address information.
        family, transport, src, dst, sport, dport = (
            Family.UNSPEC,
            Transport.UNSPEC,
            None,
            None,
            0,
            0,
        )
    header = ProxyHeader(command, family, transport, src, sport, dst, dport, tlvs)
    return Parsed(header, total)


def _parse_tlvs(data: bytes) -> tuple[tuple[int, bytes], ...] | Invalid:
    tlvs: list[tuple[int, bytes]] = []
    seen: set[int] = set()
    offset = 0
    while offset < len(data):
        if len(data) - offset < _TLV.size:
            return Invalid("truncated TLV header")
        kind, length = _TLV.unpack_from(data, offset)
        offset += _TLV.size
        if len(data) - offset < length:
            return Invalid(f"TLV {kind:#04x} runs past the end of the header")
        value = data[offset : offset + length]
        offset += length
        if kind in (PP2_TYPE_CJB_TENANT, PP2_TYPE_CJB_IFNAME):
            if kind in seen:
                return Invalid(f"TLV {kind:#04x} appears twice")
            pattern = TENANT_PATTERN if kind == PP2_TYPE_CJB_TENANT else IFNAME_PATTERN
            try:
                text = value.decode()
            except UnicodeDecodeError:
                return Invalid(f"TLV {kind:#04x} is not UTF-8")
            if re.fullmatch(pattern, text) is None:
                return Invalid(f"TLV {kind:#04x} is not a valid name")
        seen.add(kind)
        tlvs.append((kind, value))
    return tuple(tlvs)
