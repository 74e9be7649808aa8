# ruff: noqa: E501  (frame headers in hex: one string per frame reads best)
"""RFC vectors for the translator, shipped with it: `cjb gateway selftest` runs them against
the installed translator (the kernel fast path and the Python path), and the tests run them
too (tests/test_xlat_vectors.py derives every one again from the RFC rules with scapy).

Each vector is one frame in and what must come out: the frames, byte for byte, with the
port each leaves on, or the named drop. Headers are hex; the payload is a fixed pattern
appended to the input and to every output. Addresses are the lab's: LAN client
192.168.0.10 (fe80::c0a8:a), service 192.168.0.100 (fe80::c0a8:64), LAN MTU 1500, service
MTU 1520. CJB copies TTL / hop limit instead of decrementing it (it is a link, not a router:
docs/translator.md); MACs pass through.

`fast` marks the common case the kernel fast path must translate itself; the others it
leaves to the Python path (and must never translate differently).
"""

from __future__ import annotations

from dataclasses import dataclass

from cjb.common.tunnel_mtu import service_mtu_for
from cjb.gateway.xlat.config import XlatConfig
from cjb.gateway.xlat.result import Direction, DropReason, Side

LAN_MTU = 1500
CONFIG = XlatConfig(lan_mtu=LAN_MTU, service_mtu=service_mtu_for(LAN_MTU))

SMALL = bytes(range(100))
LARGE = bytes(i & 0xFF for i in range(1300))  # IPv6 -> IPv4 over 1260 bytes: DF set, ID 0


@dataclass(frozen=True, slots=True)
class Vector:
    name: str
    rfc: str  # the sections the expected output follows
    direction: Direction
    header_hex: str
    payload: bytes
    expect: tuple[tuple[Side, str], ...] | DropReason  # output headers (hex) per port, or the drop
    fast: bool = False  # the kernel fast path must take it

    @property
    def frame(self) -> bytes:
        return bytes.fromhex(self.header_hex) + self.payload

    @property
    def expected_frames(self) -> tuple[tuple[Side, bytes], ...]:
        if isinstance(self.expect, DropReason):
            return ()
        return tuple((side, bytes.fromhex(h) + self.payload) for side, h in self.expect)

    @property
    def expected_drop(self) -> DropReason | None:
        return self.expect if isinstance(self.expect, DropReason) else None


# fmt: off
VECTORS: tuple[Vector, ...] = (
    Vector(
        "ipv4-tcp",
        "RFC 7915 §4.1, §4.5",
        Direction.TO_SERVICE,
        "02000000006402000000000a08004510008c123440004006a669c0a8000ac0a800649c400050000000010000000250182000d5480000",
        SMALL,
        ((Side.SERVICE, "02000000006402000000000a86dd6100000000780640fe8000000000000000000000c0a8000afe8000000000000000000000c0a800649c400050000000010000000250182000d8460000"),),
        fast=True,
    ),
    Vector(
        "ipv4-udp",
        "RFC 7915 §4.1, §4.5",
        Direction.TO_SERVICE,
        "02000000006402000000000a080045000080000740001111e7a7c0a8000ac0a800649c40270f006c1e3a",
        SMALL,
        ((Side.SERVICE, "02000000006402000000000a86dd60000000006c1111fe8000000000000000000000c0a8000afe8000000000000000000000c0a800649c40270f006c2138"),),
        fast=True,
    ),
    Vector(
        "icmpv4-echo-request",
        "RFC 7915 §4.2",
        Direction.TO_SERVICE,
        "02000000006402000000000a080045000080000940004001b8b5c0a8000ac0a8006408005c2a00070001",
        SMALL,
        ((Side.SERVICE, "02000000006402000000000a86dd60000000006c3a40fe8000000000000000000000c0a8000afe8000000000000000000000c0a80064800064c200070001"),),
        fast=True,
    ),
    Vector(
        "ipv4-udp-zero-checksum",
        "RFC 7915 §4.5",
        Direction.TO_SERVICE,
        "02000000006402000000000a080045000080000340004011b8abc0a8000ac0a800649c40270f006c0000",
        SMALL,
        ((Side.SERVICE, "02000000006402000000000a86dd60000000006c1140fe8000000000000000000000c0a8000afe8000000000000000000000c0a800649c40270f006c2138"),),
        fast=False,
    ),
    Vector(
        "ipv4-to-loopback",
        "RFC 1122 §3.2.1.3",
        Direction.TO_SERVICE,
        "02000000006402000000000a080045000080000140004011fab8c0a8000a7f00000100010002006c2392",
        SMALL,
        DropReason("address-not-translatable"),
        fast=False,
    ),
    Vector(
        "ipv6-tcp",
        "RFC 7915 §5.1, §5.5; RFC 6864 §4.1",
        Direction.TO_LAN,
        "02000000000a02000000006486dd628000000528063ffe8000000000000000000000c0a80064fe8000000000000000000000c0a8000a00509c4000000005000000065010200053c10000",
        LARGE,
        ((Side.LAN, "02000000000a02000000006408004528053c000040003f06b4d5c0a80064c0a8000a00509c4000000005000000065010200050c30000"),),
        fast=True,
    ),
    Vector(
        "ipv6-udp",
        "RFC 7915 §5.1, §5.5",
        Direction.TO_LAN,
        "02000000000a02000000006486dd60000000051c1140fe8000000000000000000000c0a80064fe8000000000000000000000c0a8000a00359c40051cbedc",
        LARGE,
        ((Side.LAN, "02000000000a020000000064080045000530000040004011b3fec0a80064c0a8000a00359c40051cbbde"),),
        fast=True,
    ),
    Vector(
        "icmpv6-echo-reply",
        "RFC 7915 §5.2",
        Direction.TO_LAN,
        "02000000000a02000000006486dd60000000051c3a40fe8000000000000000000000c0a80064fe8000000000000000000000c0a8000a8100df3c00070001",
        LARGE,
        ((Side.LAN, "02000000000a020000000064080045000530000040004001b40ec0a80064c0a8000a0000e45400070001"),),
        fast=True,
    ),
    Vector(
        "ipv6-unknown-next-header",
        "RFC 7915 §5.1",
        Direction.TO_LAN,
        "02000000000a02000000006486dd600000000514fd40fe8000000000000000000000c0a80064fe8000000000000000000000c0a8000a",
        LARGE,
        ((Side.LAN, "02000000000a0200000000640800450005280000400040fdb31ac0a80064c0a8000a"),),
        fast=False,
    ),
    Vector(
        "ipv6-atomic-fragment-icmp",
        "RFC 6946 §4; RFC 7915 §5.1.1",
        Direction.TO_LAN,
        "02000000000a02000000006486dd6000000005242c40fe8000000000000000000000c0a80064fe8000000000000000000000c0a8000a3a000000000000428000e03c00070001",
        LARGE,
        ((Side.LAN, "02000000000a020000000064080045000530004200004001f3ccc0a80064c0a8000a0800dc5400070001"),),
        fast=False,
    ),
)
# fmt: on
