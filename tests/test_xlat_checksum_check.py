"""The tests' own checksum checker (xlat_frames.checksum_problems) can fail.

A checker that passes a wrong checksum makes every RFC test that relies on it worthless,
so each kind of checksum it claims to verify is corrupted here and must be reported;
the same frames intact must pass. Frames come from scapy, which fills in checksums.
"""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6EchoRequest, IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import ARP
from scapy.packet import Raw
from xlat_frames import (
    LAN_IP,
    LAN_IP6,
    SVC_IP,
    SVC_IP6,
    assert_checksums,
    checksum_problems,
    icmp6_raw,
    lan_frame,
    ones_complement_sum,
    svc_frame,
)

QUOTED = bytes(IP(src=SVC_IP, dst=LAN_IP) / UDP(sport=53, dport=4000) / Raw(b"q" * 8))

# name -> (frame, offset of one checksum byte in the frame, what the report names)
_ETH = 14
_CASES = {
    "ipv4-header": (lan_frame(IP(src=LAN_IP, dst=SVC_IP) / UDP() / b"x"), _ETH + 10, "IPv4 header"),
    "tcp-ipv4": (lan_frame(IP(src=LAN_IP, dst=SVC_IP) / TCP() / b"x"), _ETH + 20 + 16, "TCP/IPv4"),
    "udp-ipv4": (lan_frame(IP(src=LAN_IP, dst=SVC_IP) / UDP() / b"x"), _ETH + 20 + 6, "UDP/IPv4"),
    "icmpv4": (lan_frame(IP(src=LAN_IP, dst=SVC_IP) / ICMP() / b"x"), _ETH + 20 + 2, "ICMPv4"),
    # a valid ICMPv4 error whose quoted IPv4 header checksum is off: the outer checksum is
    # recomputed after the corruption below, so only the quoted one is wrong
    "quoted-ipv4-header": (
        lan_frame(IP(src=LAN_IP, dst=SVC_IP) / ICMP(type=3, code=3) / Raw(QUOTED)),
        _ETH + 20 + 8 + 10,
        "quoted IPv4 header",
    ),
    "tcp-ipv6": (svc_frame(IPv6(src=SVC_IP6, dst=LAN_IP6) / TCP() / b"x"), _ETH + 40 + 16, "TCP"),
    "udp-ipv6": (svc_frame(IPv6(src=SVC_IP6, dst=LAN_IP6) / UDP() / b"x"), _ETH + 40 + 6, "UDP"),
    "icmpv6": (
        svc_frame(IPv6(src=SVC_IP6, dst=LAN_IP6) / ICMPv6EchoRequest(data=b"x")),
        _ETH + 40 + 2,
        "ICMPv6",
    ),
    "icmpv6-error": (
        svc_frame(IPv6(src=SVC_IP6, dst=LAN_IP6) / ICMPv6DestUnreach() / Raw(bytes(48))),
        _ETH + 40 + 2,
        "ICMPv6",
    ),
    "icmpv6-atomic-fragment": (
        svc_frame(
            IPv6(src=SVC_IP6, dst=LAN_IP6) / IPv6ExtHdrFragment() / ICMPv6EchoRequest(data=b"x")
        ),
        _ETH + 48 + 2,
        "ICMPv6",
    ),
}


@pytest.mark.parametrize("name", list(_CASES))
def test_intact_frame_passes(name: str) -> None:
    frame, _at, _what = _CASES[name]
    assert checksum_problems(frame) == []
    assert_checksums(frame)


@pytest.mark.parametrize("flip", [0x01, 0x80])
@pytest.mark.parametrize("name", list(_CASES))
def test_corrupted_checksum_is_reported(name: str, flip: int) -> None:
    frame, at, what = _CASES[name]
    bad = bytearray(frame)
    bad[at] ^= flip
    if name == "quoted-ipv4-header":  # keep the outer ICMPv4 checksum valid
        icmp = bad[_ETH + 20 :]
        icmp[2:4] = b"\x00\x00"
        icmp[2:4] = (0xFFFF - ones_complement_sum(bytes(icmp))).to_bytes(2, "big")
        bad[_ETH + 20 :] = icmp
    problems = checksum_problems(bytes(bad))
    assert len(problems) == 1 and problems[0].startswith(what), problems
    with pytest.raises(AssertionError, match="do not verify"):
        assert_checksums(bytes(bad))


def test_icmpv6_checksum_without_pseudo_header_is_reported() -> None:
    """RFC 4443 §2.3: the ICMPv6 checksum covers the pseudo-header; a checksum over the
    message alone (the ICMPv4 way) must not pass."""
    msg = bytearray(bytes((2, 0, 0, 0)) + (1400).to_bytes(4, "big") + bytes(40))
    msg[2:4] = (0xFFFF - ones_complement_sum(bytes(msg))).to_bytes(2, "big")
    frame = svc_frame(IPv6(src=SVC_IP6, dst=LAN_IP6, nh=58) / Raw(bytes(msg)))
    assert checksum_problems(frame) == [f"ICMPv6 checksum {msg[2:4].hex()}"]
    good = icmp6_raw(2, 0, (1400).to_bytes(4, "big"), bytes(40), SVC_IP6, LAN_IP6)
    assert checksum_problems(svc_frame(IPv6(src=SVC_IP6, dst=LAN_IP6, nh=58) / Raw(good))) == []


def test_udp_zero_checksum_rules() -> None:
    """RFC 768: zero means "no checksum" over IPv4; RFC 8200 §8.1: never valid over IPv6."""
    v4 = lan_frame(IP(src=LAN_IP, dst=SVC_IP) / UDP(chksum=0) / b"x")
    assert checksum_problems(v4) == []
    v6 = svc_frame(IPv6(src=SVC_IP6, dst=LAN_IP6) / UDP(chksum=0) / b"x")
    assert checksum_problems(v6) and checksum_problems(v6)[0].startswith("UDP/IPv6")


def test_frames_without_checksums_pass() -> None:
    assert checksum_problems(lan_frame(ARP(psrc=LAN_IP, pdst=SVC_IP))) == []
