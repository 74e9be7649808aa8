"""ARP (RFC 826, RFC 5227) <-> Neighbor Discovery (RFC 4861, RFC 4862) vectors, and the
link-scope multicast mapping table (RFC 1112 §6.4 and RFC 2464 §7 MACs).

MAC addresses are preserved end to end: the Ethernet source of the output is the
Ethernet source of the input; the ARP sender MAC becomes the link-layer option and back.
"""

from __future__ import annotations

import ipaddress

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import (
    ICMPv6MLQuery,
    ICMPv6MLReport,
    ICMPv6MLReport2,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_Redirect,
    ICMPv6ND_RS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    IPv6ExtHdrHopByHop,
    RouterAlert,
)
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw
from xlat_frames import (
    LAN_IP,
    LAN_IP6,
    LAN_MAC,
    NO_IP,
    SVC_IP,
    SVC_IP6,
    SVC_MAC,
    TO_LAN,
    TO_SERVICE,
    assert_checksums,
    drop_only,
    l4_residue_v6,
    lan_frame,
    only,
    run,
    svc_frame,
)

from cjb.gateway.xlat import DropReason, Side

BCAST = "ff:ff:ff:ff:ff:ff"
ARP_HW = "02:00:00:00:aa:0a"  # ARP sender MAC, deliberately != the Ethernet source


def _arp(**kw) -> bytes:
    eth_dst = kw.pop("eth_dst", BCAST)
    return bytes(Ether(dst=eth_dst, src=LAN_MAC) / ARP(**kw))


def _ndp_ok(frame: bytes) -> Ether:
    out = Ether(frame)
    assert out[IPv6].hlim == 255  # RFC 4861 §7.1
    assert l4_residue_v6(out[IPv6], 58, bytes(out[IPv6].payload)) == 0
    assert_checksums(frame)
    return out


# ------------------------------------------------------------ ARP -> NDP (LAN -> service)


def test_arp_request_to_solicited_node_ns() -> None:
    frame = _arp(op=1, hwsrc=ARP_HW, psrc=LAN_IP, pdst=SVC_IP)
    out = _ndp_ok(only(run(frame, TO_SERVICE), Side.SERVICE))
    # RFC 4291 §2.7.1 solicited-node group, RFC 2464 §7 its MAC
    assert out.dst == "33:33:ff:a8:00:64" and out.src == LAN_MAC
    assert out[IPv6].src == LAN_IP6 and out[IPv6].dst == "ff02::1:ffa8:64"
    ns = out[ICMPv6ND_NS]
    assert ns.code == 0 and ns.tgt == SVC_IP6
    assert out[ICMPv6NDOptSrcLLAddr].lladdr == ARP_HW  # RFC 4861 §4.3 SLLA


def test_unicast_arp_request_to_unicast_ns() -> None:
    """RFC 1122 §2.3.2.1 unicast refresh ~ NUD unicast NS (RFC 4861 §7.2.2)."""
    frame = _arp(op=1, hwsrc=ARP_HW, psrc=LAN_IP, pdst=SVC_IP, eth_dst=SVC_MAC)
    out = _ndp_ok(only(run(frame, TO_SERVICE), Side.SERVICE))
    assert out.dst == SVC_MAC and out[IPv6].dst == SVC_IP6
    assert out[ICMPv6ND_NS].tgt == SVC_IP6


def test_arp_reply_to_solicited_na() -> None:
    frame = _arp(op=2, hwsrc=ARP_HW, psrc=LAN_IP, hwdst=SVC_MAC, pdst=SVC_IP, eth_dst=SVC_MAC)
    out = _ndp_ok(only(run(frame, TO_SERVICE), Side.SERVICE))
    assert (out.dst, out.src) == (SVC_MAC, LAN_MAC)
    assert (out[IPv6].src, out[IPv6].dst) == (LAN_IP6, SVC_IP6)
    na = out[ICMPv6ND_NA]
    assert (na.R, na.S, na.O) == (0, 1, 1)  # RFC 4861 §7.2.4
    assert na.tgt == LAN_IP6
    assert out[ICMPv6NDOptDstLLAddr].lladdr == ARP_HW  # TLLA


def test_rfc5227_probe_to_dad_ns() -> None:
    frame = _arp(op=1, hwsrc=LAN_MAC, psrc=NO_IP, hwdst="00:00:00:00:00:00", pdst=LAN_IP)
    out = _ndp_ok(only(run(frame, TO_SERVICE), Side.SERVICE))
    assert out[IPv6].src == "::"  # RFC 4862 §5.4.2
    assert out[IPv6].dst == "ff02::1:ffa8:a" and out.dst == "33:33:ff:a8:00:0a"
    assert out[ICMPv6ND_NS].tgt == LAN_IP6
    assert len(bytes(out[ICMPv6ND_NS])) == 24  # no SLLA from :: (RFC 4861 §7.1.1)


@pytest.mark.parametrize("op", [1, 2], ids=["request", "reply"])
def test_rfc5227_announcement_to_unsolicited_na(op: int) -> None:
    frame = _arp(op=op, hwsrc=ARP_HW, psrc=LAN_IP, pdst=LAN_IP)
    out = _ndp_ok(only(run(frame, TO_SERVICE), Side.SERVICE))
    assert out.dst == "33:33:00:00:00:01" and out[IPv6].dst == "ff02::1"
    assert out[IPv6].src == LAN_IP6
    na = out[ICMPv6ND_NA]
    assert (na.S, na.O) == (0, 1) and na.tgt == LAN_IP6  # RFC 4861 §7.2.6
    assert out[ICMPv6NDOptDstLLAddr].lladdr == ARP_HW


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"op": 3, "psrc": LAN_IP, "pdst": SVC_IP}, DropReason.ARP_UNSUPPORTED),
        ({"op": 1, "ptype": 0x86DD, "psrc": LAN_IP, "pdst": SVC_IP}, DropReason.ARP_UNSUPPORTED),
        ({"op": 1, "psrc": LAN_IP, "pdst": "224.0.0.1"}, DropReason.ADDRESS_NOT_TRANSLATABLE),
        ({"op": 1, "psrc": "127.0.0.1", "pdst": SVC_IP}, DropReason.ADDRESS_NOT_TRANSLATABLE),
        ({"op": 1, "psrc": NO_IP, "pdst": NO_IP}, DropReason.ADDRESS_NOT_TRANSLATABLE),
    ],
)
def test_arp_not_translated(kw: dict, reason: DropReason) -> None:
    assert drop_only(run(_arp(**kw), TO_SERVICE)) is reason


def test_truncated_arp() -> None:
    frame = _arp(op=1, psrc=LAN_IP, pdst=SVC_IP)[: 14 + 20]
    assert drop_only(run(frame, TO_SERVICE)) is DropReason.TRUNCATED


# ------------------------------------------------------------ NDP -> ARP (service -> LAN)


def _ns(src=SVC_IP6, dst="ff02::1:ffa8:a", tgt=LAN_IP6, lla=SVC_MAC, hlim=255, eth_dst=None):
    pkt = IPv6(src=src, dst=dst, hlim=hlim) / ICMPv6ND_NS(tgt=tgt)
    if lla:
        pkt = pkt / ICMPv6NDOptSrcLLAddr(lladdr=lla)
    if eth_dst is None:  # RFC 2464 §7: 33:33 + the low 32 bits of the group
        eth_dst = "33:33:" + ":".join(f"{b:02x}" for b in ipaddress.IPv6Address(dst).packed[12:])
    return svc_frame(pkt, dst=eth_dst)


def _na(src=SVC_IP6, dst=LAN_IP6, tgt=SVC_IP6, flags=(0, 1, 1), lla=SVC_MAC, eth_dst=LAN_MAC):
    r, s, o = flags
    pkt = IPv6(src=src, dst=dst, hlim=255) / ICMPv6ND_NA(tgt=tgt, R=r, S=s, O=o)
    if lla:
        pkt = pkt / ICMPv6NDOptDstLLAddr(lladdr=lla)
    return svc_frame(pkt, dst=eth_dst)


def test_ns_to_arp_request() -> None:
    out = Ether(only(run(_ns(lla="02:00:00:00:bb:64"), TO_LAN), Side.LAN))
    assert (out.dst, out.src) == (BCAST, SVC_MAC)
    arp = out[ARP]
    assert arp.op == 1 and arp.hwsrc == "02:00:00:00:bb:64"  # SLLA -> ARP sender MAC
    assert (arp.psrc, arp.pdst) == (SVC_IP, LAN_IP)
    assert arp.hwdst == "00:00:00:00:00:00"


def test_unicast_ns_to_unicast_arp_request() -> None:
    out = Ether(only(run(_ns(dst=LAN_IP6, eth_dst=LAN_MAC), TO_LAN), Side.LAN))
    assert out.dst == LAN_MAC and out[ARP].op == 1 and out[ARP].pdst == LAN_IP


def test_na_to_arp_reply() -> None:
    out = Ether(only(run(_na(lla="02:00:00:00:bb:64"), TO_LAN), Side.LAN))
    assert (out.dst, out.src) == (LAN_MAC, SVC_MAC)
    arp = out[ARP]
    assert arp.op == 2 and arp.hwsrc == "02:00:00:00:bb:64"  # TLLA -> sender MAC
    assert (arp.psrc, arp.pdst, arp.hwdst) == (SVC_IP, LAN_IP, LAN_MAC)


def test_unsolicited_na_to_gratuitous_arp() -> None:
    frame = _na(dst="ff02::1", flags=(0, 0, 1), eth_dst="33:33:00:00:00:01")
    out = Ether(only(run(frame, TO_LAN), Side.LAN))
    assert out.dst == BCAST
    arp = out[ARP]
    assert arp.op == 1 and arp.psrc == arp.pdst == SVC_IP  # RFC 5227 §2.3 announcement
    assert arp.hwsrc == SVC_MAC


def test_dad_ns_to_arp_probe() -> None:
    frame = _ns(src="::", dst="ff02::1:ffa8:64", tgt=SVC_IP6, lla=None)
    out = Ether(only(run(frame, TO_LAN), Side.LAN))
    assert out.dst == BCAST and out.src == SVC_MAC
    arp = out[ARP]
    assert arp.op == 1 and arp.psrc == NO_IP and arp.pdst == SVC_IP  # RFC 5227 §2.1.1
    assert arp.hwsrc == SVC_MAC and arp.hwdst == "00:00:00:00:00:00"


def _corrupt_checksum(frame: bytes) -> bytes:
    b = bytearray(frame)
    b[14 + 40 + 2] ^= 0xFF
    return bytes(b)


def _with_code(frame: bytes, code: int) -> bytes:
    pkt = Ether(frame)
    pkt[IPv6].payload.code = code
    del pkt[IPv6].payload.cksum
    return bytes(pkt)


@pytest.mark.parametrize(
    "frame",
    [
        _ns(hlim=254),  # RFC 4861 §7.1.1: hop limit 255
        _ns(hlim=64),
        _corrupt_checksum(_ns()),  # valid checksum
        _with_code(_ns(), 1),  # code 0
        _ns(src="::", dst="ff02::1:ffa8:64", tgt=SVC_IP6, lla=SVC_MAC),  # DAD with SLLA
        _ns(src="::", dst="ff02::1", tgt=SVC_IP6, lla=None),  # DAD not to solicited-node
        _ns(tgt="ff02::1"),  # multicast target
        _na(dst="ff02::1", flags=(0, 1, 1), eth_dst="33:33:00:00:00:01"),  # §7.1.2: S on mcast
        _corrupt_checksum(_na()),
        svc_frame(
            IPv6(src=SVC_IP6, dst=LAN_IP6, hlim=255)
            / ICMPv6ND_NS(tgt=LAN_IP6)
            / Raw(b"\x01\x00" + bytes(6))
        ),  # option length 0 (RFC 4861 §4.6)
    ],
    ids=[
        "hlim254",
        "hlim64",
        "ns-bad-checksum",
        "code1",
        "dad-with-slla",
        "dad-not-solicited-node",
        "multicast-target",
        "solicited-na-to-multicast",
        "na-bad-checksum",
        "option-length-0",
    ],
)
def test_rfc4861_7_1_invalid_ndp_dropped(frame: bytes) -> None:
    assert drop_only(run(frame, TO_LAN)) is DropReason.NDP_INVALID


def test_ndp_short_message_invalid() -> None:
    msg = bytes(IPv6(src=SVC_IP6, dst=LAN_IP6, hlim=255) / ICMPv6ND_NS(tgt=LAN_IP6))
    pkt = IPv6(msg[:40]) / Raw(msg[40:60])
    pkt = IPv6(bytes(pkt))
    pkt.plen = 20
    body = bytearray(msg[40:60])
    body[2:4] = b"\x00\x00"
    from xlat_frames import ones_complement_sum, pseudo_v6

    csum = 0xFFFF - ones_complement_sum(pseudo_v6(SVC_IP6, LAN_IP6, 58, 20) + bytes(body))
    body[2:4] = csum.to_bytes(2, "big")
    frame = svc_frame(IPv6(src=SVC_IP6, dst=LAN_IP6, hlim=255, nh=58) / Raw(bytes(body)))
    assert drop_only(run(frame, TO_LAN)) is DropReason.NDP_INVALID


@pytest.mark.parametrize(
    ("layer", "reason"),
    [
        (ICMPv6ND_RS(), DropReason.NDP_NO_ARP_EQUIVALENT),
        (ICMPv6ND_RA(), DropReason.NDP_NO_ARP_EQUIVALENT),
        (ICMPv6ND_Redirect(tgt=SVC_IP6, dst=LAN_IP6), DropReason.NDP_NO_ARP_EQUIVALENT),
        (ICMPv6MLQuery(), DropReason.MLD),
        (ICMPv6MLReport(mladdr="ff02::fb"), DropReason.MLD),
        (ICMPv6MLReport2(), DropReason.MLD),
    ],
    ids=["rs", "ra", "redirect", "mld-query", "mld-report", "mldv2-report"],
)
def test_ndp_and_mld_without_arp_equivalent(layer, reason: DropReason) -> None:
    hbh = IPv6ExtHdrHopByHop(options=[RouterAlert()])
    l3 = IPv6(src=SVC_IP6, dst="ff02::1", hlim=255 if reason is not DropReason.MLD else 1)
    if reason is DropReason.MLD:
        l3 = l3 / hbh
    frame = svc_frame(l3 / layer, dst="33:33:00:00:00:01")
    assert drop_only(run(frame, TO_LAN)) is reason


def test_ndp_from_non_fe80_96_source() -> None:
    """The service host's own EUI-64 link-local address has no IPv4 form."""
    frame = _ns(src="fe80::200:ff:fe00:64")
    assert drop_only(run(frame, TO_LAN)) is DropReason.ADDRESS_NOT_TRANSLATABLE


# ------------------------------------------------------------ multicast table

_GROUPS = [
    ("224.0.0.251", "01:00:5e:00:00:fb", "ff02::fb", "33:33:00:00:00:fb"),  # mDNS
    ("239.255.255.250", "01:00:5e:7f:ff:fa", "ff02::c", "33:33:00:00:00:0c"),  # SSDP
    ("224.0.0.252", "01:00:5e:00:00:fc", "ff02::1:3", "33:33:00:01:00:03"),  # LLMNR
]


@pytest.mark.parametrize(("g4", "mac4", "g6", "mac6"), _GROUPS, ids=["mdns", "ssdp", "llmnr"])
def test_multicast_group_table(g4: str, mac4: str, g6: str, mac6: str) -> None:
    pkt = IP(src=LAN_IP, dst=g4, ttl=255) / UDP(sport=5353, dport=5353) / Raw(b"q")
    out = Ether(only(run(lan_frame(pkt, dst=mac4), TO_SERVICE), Side.SERVICE))
    assert out.dst == mac6 and out.src == LAN_MAC
    assert out[IPv6].dst == g6 and out[IPv6].hlim == 255
    assert_checksums(bytes(out))
    pkt6 = IPv6(src=SVC_IP6, dst=g6, hlim=255) / UDP(sport=5353, dport=5353) / Raw(b"a")
    back = Ether(only(run(svc_frame(pkt6, dst=mac6), TO_LAN), Side.LAN))
    assert back.dst == mac4 and back.src == SVC_MAC
    assert back[IP].dst == g4 and back[IP].ttl == 255
    assert_checksums(bytes(back))


@pytest.mark.parametrize("group", ["224.0.0.1", "224.0.0.22", "239.1.2.3", "232.0.0.1"])
def test_other_ipv4_multicast_not_mapped(group: str) -> None:
    pkt = IP(src=LAN_IP, dst=group) / UDP(sport=1, dport=2)
    frame = lan_frame(pkt, dst="01:00:5e:00:00:01")
    assert drop_only(run(frame, TO_SERVICE)) is DropReason.MULTICAST_NOT_MAPPED


@pytest.mark.parametrize("group", ["ff02::1", "ff02::2", "ff05::c", "ff02::1:ffa8:a", "ff0e::fb"])
def test_other_ipv6_multicast_not_mapped(group: str) -> None:
    pkt = IPv6(src=SVC_IP6, dst=group) / UDP(sport=1, dport=2)
    frame = svc_frame(pkt, dst="33:33:00:00:00:01")
    assert drop_only(run(frame, TO_LAN)) is DropReason.MULTICAST_NOT_MAPPED


def test_igmp_dropped() -> None:
    """RFC 7915 §4.2: IGMP has no counterpart here."""
    pkt = IP(src=LAN_IP, dst="224.0.0.251", proto=2, ttl=1) / Raw(
        b"\x16\x00\x09\x04\xe0\x00\x00\xfb"
    )
    frame = lan_frame(pkt, dst="01:00:5e:00:00:fb")
    assert drop_only(run(frame, TO_SERVICE)) is DropReason.IGMP
