"""Shared frame builders and independent checkers for the translator RFC/property tests.

Frames are built with scapy (not with cjb's own codecs), so the tests do not share the
code under test's idea of a header; checksums are checked by scapy (delete the field,
rebuild, compare bytes) and by a deliberately naive RFC 1071 loop below.
"""

from __future__ import annotations

import ipaddress

from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from cjb.gateway.xlat import Direction, DropReason, Side, Translator, XlatConfig, XlatResult

# The paper's addresses (DESIGN §1): LAN client .10, service .100.
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
) -> XlatResult:
    """Translate with a fresh translator; a translator bug (INTERNAL_ERROR) fails loudly."""
    translator = Translator(cfg or XlatConfig(), first_ipv4_id=first_ipv4_id)
    result = translator.translate(frame, direction)
    assert translator.counters.drops[DropReason.INTERNAL_ERROR] == 0, "translator raised"
    assert result.drop is not DropReason.INTERNAL_ERROR
    if result.drop is not None:
        assert translator.counters.drops[result.drop] == 1
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


def scapy_rebuilds_same(frame: bytes) -> bool:
    """scapy as the checksum checker: drop every checksum field of the outer layers (not
    the quoted '...error' layers, whose payload may be cut short), rebuild, compare."""
    pkt = Ether(frame)
    layer: Packet = pkt
    while layer and not isinstance(layer, Raw):
        if "error" in type(layer).__name__.lower():
            break
        for name in ("chksum", "cksum"):
            if name in layer.fields:
                del layer.fields[name]
        layer = layer.payload
    return bytes(pkt) == frame


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
