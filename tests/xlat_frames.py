"""Shared frame builders and independent checkers for the translator RFC/property tests.

Frames are built with scapy (not with cjb's own codecs), so the tests do not share the
code under test's idea of a header; checksums are checked by `checksum_problems`, written
from the RFCs around a deliberately naive RFC 1071 loop (independent of cjb's checksum
code and of scapy's builder). `run` checks every frame the translator emits with it.
"""

from __future__ import annotations

import ipaddress

from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from cjb.gateway.xlat import Direction, DropReason, Side, Translator, XlatConfig, XlatResult

# The paper's addresses (docs/architecture.md): LAN client .10, service .100.
LAN_IP = "192.168.0.10"
SVC_IP = "192.168.0.100"
ROUTER_IP = "192.168.0.1"
NO_IP = "0.0.0.0"  # noqa: S104 - the unspecified address, as ARP probes carry it
LAN_IP6 = "fe80::c0a8:a"
SVC_IP6 = "fe80::c0a8:64"
ROUTER_IP6 = "fe80::c0a8:1"
LAN_MAC = "02:00:00:00:00:0a"
SVC_MAC = "02:00:00:00:00:64"
TRANSLATOR_MAC = "02:00:00:c7:b0:01"

TO_SERVICE = Direction.TO_SERVICE
TO_LAN = Direction.TO_LAN


def lan_frame(l3: Packet, *, dst: str = SVC_MAC, src: str = LAN_MAC) -> bytes:
    """An Ethernet frame as it arrives from the LAN side."""
    return bytes(Ether(dst=dst, src=src) / l3)


def svc_frame(l3: Packet, *, dst: str = LAN_MAC, src: str = SVC_MAC) -> bytes:
    """An Ethernet frame as it arrives from the service link."""
    return bytes(Ether(dst=dst, src=src) / l3)


def run(
    frame: bytes,
    direction: Direction,
    cfg: XlatConfig | None = None,
    *,
    first_ipv4_id: int = 0x4242,
    checksums: bool = True,
) -> XlatResult:
    """Translate with a fresh translator; a translator bug (INTERNAL_ERROR) fails loudly,
    and so does any emitted frame whose checksums do not verify (`checksums=False` only
    for inputs whose checksum is wrong on purpose)."""
    translator = Translator(cfg or XlatConfig(), first_ipv4_id=first_ipv4_id)
    result = translator.translate(frame, direction)
    assert translator.counters.drops[DropReason.INTERNAL_ERROR] == 0, (
        f"translator raised: {translator.errors.last()}"
    )
    assert result.drop is not DropReason.INTERNAL_ERROR
    if result.drop is not None:
        assert translator.counters.drops[result.drop] == 1
    if checksums:
        for emit in result.emits:
            assert_checksums(emit.frame)
    return result


def only(result: XlatResult, side: Side) -> bytes:
    """The single frame a successful translation emits on `side`."""
    assert result.drop is None, f"dropped: {result.drop}"
    assert len(result.emits) == 1, f"{len(result.emits)} frames"
    assert result.emits[0].side is side
    return result.emits[0].frame


def error_back(result: XlatResult, reason: DropReason, side: Side) -> bytes:
    """A drop that sends one ICMP error back on `side` (where the packet came from)."""
    assert result.drop is reason, f"drop {result.drop}, expected {reason}"
    assert len(result.emits) == 1 and result.emits[0].side is side
    return result.emits[0].frame


def drop_only(result: XlatResult) -> DropReason | None:
    """The drop reason of a result that emits nothing."""
    assert not result.emits, f"unexpected frames: {result.emits}"
    return result.drop


# ------------------------------------------------------------------ independent checksums


def ones_complement_sum(data: bytes) -> int:
    """RFC 1071 §4.1, written as the naive loop with end-around carry (independent of
    cjb.common.packet.checksum's big-integer trick). Returns 0..0xFFFF."""
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def residue(data: bytes) -> int:
    """How far a checksummed buffer is from verifying: 0 (i.e. 0xFFFF sum) when valid.

    Maps the one's complement sum to 0..0xFFFE so +0 and -0 compare equal."""
    return (0xFFFF - ones_complement_sum(data)) % 0xFFFF


def pseudo_v4(src: str, dst: str, proto: int, length: int) -> bytes:
    return (
        ipaddress.IPv4Address(src).packed
        + ipaddress.IPv4Address(dst).packed
        + bytes((0, proto))
        + length.to_bytes(2, "big")
    )


def pseudo_v6(src: str, dst: str, nh: int, length: int) -> bytes:
    return (
        ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + length.to_bytes(4, "big")
        + bytes((0, 0, 0, nh))
    )


def l4_residue_v4(ip: IP) -> int:
    """Checksum residue of the IPv4 packet's TCP/UDP/ICMP payload (0 = valid)."""
    seg = bytes(ip.payload)[: ip.len - ip.ihl * 4]
    if ip.proto == 1:
        return residue(seg)
    return residue(pseudo_v4(ip.src, ip.dst, ip.proto, len(seg)) + seg)


def l4_residue_v6(ip6: IPv6, nh: int, seg: bytes) -> int:
    return residue(pseudo_v6(ip6.src, ip6.dst, nh, len(seg)) + seg)


_IPV6_SKIPPABLE = (0, 43, 60)  # hop-by-hop, routing, destination options (RFC 8200 §4)
_ICMPV4_ERRORS = (3, 4, 5, 11, 12)  # RFC 792: errors quote an IPv4 packet


def checksum_problems(frame: bytes) -> list[str]:
    """Every checksum in an Ethernet frame that does not verify, as readable strings.

    Written from the RFCs with the naive loop above, not with cjb's codecs or scapy's
    builder: the IPv4 header checksum (RFC 791), TCP/UDP over the IPv4 pseudo-header
    (RFC 793, RFC 768) or the IPv6 one (RFC 8200 §8.1), ICMPv4 over the message (RFC 792)
    and ICMPv6 over the IPv6 pseudo-header (RFC 4443 §2.3). Inside an ICMPv4 error the
    quoted IPv4 header must verify too. A transport checksum that a single fragment does
    not cover completely (non-atomic fragments) is not checked; neither is a quoted
    transport header, which may be cut short.
    """
    ethertype = frame[12:14]
    packet = frame[14:]
    if ethertype == b"\x08\x00":
        return _v4_problems(packet, "")
    if ethertype == b"\x86\xdd":
        return _v6_problems(packet)
    return []


def _v4_problems(packet: bytes, where: str) -> list[str]:
    problems = []
    ihl = (packet[0] & 0x0F) * 4
    header = packet[:ihl]
    if residue(header):
        problems.append(f"{where}IPv4 header checksum {header[10:12].hex()}")
    if where:  # a quoted packet: its transport part may be cut short
        return problems
    total = int.from_bytes(packet[2:4], "big")
    flags_offset = int.from_bytes(packet[6:8], "big")
    if flags_offset & 0x3FFF:  # MF or a non-zero offset: a fragment
        return problems
    proto = packet[9]
    seg = packet[ihl:total]
    src, dst = str(ipaddress.IPv4Address(packet[12:16])), str(ipaddress.IPv4Address(packet[16:20]))
    if proto == 1:
        if residue(seg):
            problems.append(f"ICMPv4 checksum {seg[2:4].hex()}")
        elif seg[0] in _ICMPV4_ERRORS and len(seg) >= 28:
            problems += _v4_problems(seg[8:], "quoted ")
    elif proto == 6 or (proto == 17 and seg[6:8] != b"\x00\x00"):  # RFC 768: 0 = none
        seg = _udp_datagram(seg) if proto == 17 else seg
        if residue(pseudo_v4(src, dst, proto, len(seg)) + seg):
            name = "TCP" if proto == 6 else "UDP"
            problems.append(f"{name}/IPv4 checksum {seg[16 if proto == 6 else 6 :][:2].hex()}")
    return problems


def _v6_problems(packet: bytes) -> list[str]:
    plen = int.from_bytes(packet[4:6], "big")
    nh, pos = packet[6], 40
    while nh in _IPV6_SKIPPABLE or nh == 44:
        if nh == 44:
            offset_m = int.from_bytes(packet[pos + 2 : pos + 4], "big")
            if offset_m & 0xFFF9:  # offset or M set: not an atomic fragment (RFC 6946)
                return []
            nh, pos = packet[pos], pos + 8
            continue
        nh, pos = packet[pos], pos + (packet[pos + 1] + 1) * 8
    seg = packet[pos : 40 + plen]
    src = str(ipaddress.IPv6Address(packet[8:24]))
    dst = str(ipaddress.IPv6Address(packet[24:40]))
    if nh not in (6, 17, 58):
        return []
    if nh == 17 and seg[6:8] == b"\x00\x00":
        return ["UDP/IPv6 checksum 0000 (RFC 8200 §8.1 forbids it)"]
    seg = _udp_datagram(seg) if nh == 17 else seg
    if residue(pseudo_v6(src, dst, nh, len(seg)) + seg):
        name = {6: "TCP/IPv6", 17: "UDP/IPv6", 58: "ICMPv6"}[nh]
        at = {6: 16, 17: 6, 58: 2}[nh]
        return [f"{name} checksum {seg[at : at + 2].hex()}"]
    return []


def _udp_datagram(seg: bytes) -> bytes:
    """RFC 768: the checksum covers the datagram as its Length field says, not any bytes
    that follow it in the IP payload."""
    return seg[: int.from_bytes(seg[4:6], "big")]


def assert_checksums(frame: bytes) -> None:
    problems = checksum_problems(frame)
    assert not problems, f"checksums that do not verify: {problems}"


def ip4(**kw: object) -> IP:
    kw.setdefault("src", LAN_IP)
    kw.setdefault("dst", SVC_IP)
    return IP(**kw)


def ip6(**kw: object) -> IPv6:
    kw.setdefault("src", SVC_IP6)
    kw.setdefault("dst", LAN_IP6)
    return IPv6(**kw)


def icmp4_raw(icmp_type: int, code: int, rest: bytes, body: bytes) -> bytes:
    """An ICMPv4 message with a correct checksum, built by hand for exact control."""
    msg = bytes((icmp_type, code, 0, 0)) + rest + body
    csum = 0xFFFF - ones_complement_sum(msg)
    return msg[:2] + csum.to_bytes(2, "big") + msg[4:]


def icmp6_raw(icmp_type: int, code: int, rest: bytes, body: bytes, src: str, dst: str) -> bytes:
    """An ICMPv6 message with a correct checksum (RFC 4443 §2.3 pseudo-header)."""
    msg = bytes((icmp_type, code, 0, 0)) + rest + body
    csum = 0xFFFF - ones_complement_sum(pseudo_v6(src, dst, 58, len(msg)) + msg)
    return msg[:2] + csum.to_bytes(2, "big") + msg[4:]
