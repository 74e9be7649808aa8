"""A small, realistic capture of one LAN client talking to the service, for demos and tests.

Both ports of the translator appear in it, the way a tap on the tenant's link sees them:
IPv4 and ARP frames come from the LAN, IPv6 and NDP frames from the service link, so
`cjb xlat --direction auto` translates each the right way. It covers the common path and
the edges worth seeing once: ARP <-> NDP both ways, ICMP echo, a TCP handshake with data,
UDP with and without a checksum, a fragment pair, an oversized DF packet, mDNS multicast,
a broadcast and a malformed frame. Fixed addresses, IDs and timestamps: the same bytes on
every run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Raw

from cjb.gateway.xlat.offline.pcapio import CaptureWriter, LinkType

# The paper's addresses: a LAN client and the service address that LAN clients use.
CLIENT_V4 = "192.168.0.10"
SERVICE_V4 = "192.168.0.100"
CLIENT_V6 = "fe80::c0a8:a"  # fe80::/96 + 192.168.0.10
SERVICE_V6 = "fe80::c0a8:64"
CLIENT_MAC = "3c:22:fb:00:00:0a"
SERVICE_MAC = "02:cb:00:00:00:64"  # locally administered: the service host's tenant link
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"

START_SEC = 1_700_000_000  # 2023-11-14, a fixed clock so the file is reproducible
STEP_USEC = 1_000

CLIENT_PORT = 49152
CLIENT_ISN = 1_000_000
SERVICE_ISN = 7_000_000
HTTP_REQUEST = b"GET / HTTP/1.1\r\nHost: 192.168.0.100\r\n\r\n"
HTTP_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nhello tenant"


@dataclass(frozen=True, slots=True)
class SampleFrame:
    what: str  # a short description, also a stable key for tests
    frame: bytes


def _lan(ip: Packet) -> Packet:
    return Ether(src=CLIENT_MAC, dst=SERVICE_MAC) / ip


def _service(ip: Packet) -> Packet:
    return Ether(src=SERVICE_MAC, dst=CLIENT_MAC) / ip


def _client_ip(ident: int, flags: str = "", frag: int = 0, proto: int | None = None) -> Packet:
    ip = IP(src=CLIENT_V4, dst=SERVICE_V4, id=ident, flags=flags, frag=frag)
    if proto is not None:
        ip.proto = proto
    return ip


def _service_ip6(hlim: int = 64) -> Packet:
    return IPv6(src=SERVICE_V6, dst=CLIENT_V6, hlim=hlim)


def _fragment_pair() -> tuple[Packet, Packet]:
    """One 1800-byte UDP datagram split at the 1500-byte LAN MTU (offsets in 8-byte units)."""
    datagram = bytes(_client_ip(0x4242) / UDP(sport=40002, dport=5001) / (b"F" * 1800))
    udp = datagram[20:]
    first = _client_ip(0x4242, flags="MF", proto=17) / Raw(udp[:1480])
    second = _client_ip(0x4242, frag=1480 // 8, proto=17) / Raw(udp[1480:])
    return first, second


def _solicited_node(addr: str) -> tuple[str, str]:
    """The solicited-node group of an address and its MAC (RFC 4291 §2.7.1, RFC 2464 §7)."""
    low24 = bytes.fromhex(addr.split(":")[-1].rjust(4, "0"))
    third = bytes.fromhex(addr.split(":")[-2].rjust(4, "0"))[1:]
    tail = third + low24
    group = f"ff02::1:ff{tail[0]:02x}:{tail[1]:02x}{tail[2]:02x}"
    mac = "33:33:ff:" + ":".join(f"{b:02x}" for b in tail)
    return group, mac


def _conversation() -> list[tuple[str, Packet]]:
    c_seq, s_seq = CLIENT_ISN, SERVICE_ISN
    ns_group, ns_mac = _solicited_node(CLIENT_V6)
    frag1, frag2 = _fragment_pair()
    return [
        (
            "arp-request",
            Ether(src=CLIENT_MAC, dst=BROADCAST_MAC)
            / ARP(
                op=1, hwsrc=CLIENT_MAC, psrc=CLIENT_V4, hwdst="00:00:00:00:00:00", pdst=SERVICE_V4
            ),
        ),
        (
            "ndp-na",
            _service(
                _service_ip6(hlim=255)
                / ICMPv6ND_NA(R=0, S=1, O=1, tgt=SERVICE_V6)
                / ICMPv6NDOptDstLLAddr(lladdr=SERVICE_MAC)
            ),
        ),
        (
            "icmp-echo-request",
            _lan(_client_ip(0x0101, flags="DF") / ICMP(type=8, id=0x1234, seq=1) / (b"p" * 56)),
        ),
        (
            "icmpv6-echo-reply",
            _service(_service_ip6(hlim=64) / ICMPv6EchoReply(id=0x1234, seq=1) / (b"p" * 56)),
        ),
        (
            "tcp-syn",
            _lan(
                _client_ip(0x0102, flags="DF")
                / TCP(sport=CLIENT_PORT, dport=80, flags="S", seq=c_seq, options=[("MSS", 1460)])
            ),
        ),
        (
            "tcp-syn-ack",
            _service(
                _service_ip6(hlim=64)
                / TCP(
                    sport=80,
                    dport=CLIENT_PORT,
                    flags="SA",
                    seq=s_seq,
                    ack=c_seq + 1,
                    options=[("MSS", 1440)],
                )
            ),
        ),
        (
            "tcp-ack",
            _lan(
                _client_ip(0x0103, flags="DF")
                / TCP(sport=CLIENT_PORT, dport=80, flags="A", seq=c_seq + 1, ack=s_seq + 1)
            ),
        ),
        (
            "tcp-data-request",
            _lan(
                _client_ip(0x0104, flags="DF")
                / TCP(sport=CLIENT_PORT, dport=80, flags="PA", seq=c_seq + 1, ack=s_seq + 1)
                / HTTP_REQUEST
            ),
        ),
        (
            "tcp-data-response",
            _service(
                _service_ip6(hlim=64)
                / TCP(
                    sport=80,
                    dport=CLIENT_PORT,
                    flags="PA",
                    seq=s_seq + 1,
                    ack=c_seq + 1 + len(HTTP_REQUEST),
                )
                / HTTP_RESPONSE
            ),
        ),
        (
            "udp",
            _lan(_client_ip(0x0105) / UDP(sport=40000, dport=5000) / b"udp with checksum"),
        ),
        (
            "udp-zero-checksum",
            _lan(_client_ip(0x0106) / UDP(sport=40001, dport=5000, chksum=0) / b"no checksum"),
        ),
        ("ipv4-fragment-1", _lan(frag1)),
        ("ipv4-fragment-2", _lan(frag2)),
        (
            # Bigger than the LAN MTU, as captures taken with GRO/TSO show; DF=1 so the
            # translator must answer with fragmentation needed instead of fragmenting.
            "df-oversized",
            _lan(
                _client_ip(0x0107, flags="DF")
                / TCP(sport=CLIENT_PORT, dport=80, flags="A", seq=c_seq + 1, ack=s_seq + 1)
                / (b"D" * 1960)
            ),
        ),
        (
            "mdns-query",
            Ether(src=CLIENT_MAC, dst="01:00:5e:00:00:fb")
            / IP(src=CLIENT_V4, dst="224.0.0.251", ttl=255, id=0)
            / UDP(sport=5353, dport=5353)
            / DNS(id=0, qd=DNSQR(qname="_ipp._tcp.local.", qtype="PTR")),
        ),
        (
            "broadcast",
            Ether(src=CLIENT_MAC, dst=BROADCAST_MAC)
            / IP(src=CLIENT_V4, dst="255.255.255.255", id=0x0108)
            / UDP(sport=137, dport=137)
            / (b"\x00" * 50),
        ),
        (
            # An IPv4 header cut off after 12 bytes: the kind of runt a bad NIC produces.
            "malformed",
            Ether(src=CLIENT_MAC, dst=SERVICE_MAC, type=0x0800)
            / Raw(bytes(_client_ip(0x0109) / UDP(sport=1, dport=2))[:12]),
        ),
        (
            "ndp-ns",
            Ether(src=SERVICE_MAC, dst=ns_mac)
            / IPv6(src=SERVICE_V6, dst=ns_group, hlim=255)
            / ICMPv6ND_NS(tgt=CLIENT_V6)
            / ICMPv6NDOptSrcLLAddr(lladdr=SERVICE_MAC),
        ),
        (
            "arp-reply",
            Ether(src=CLIENT_MAC, dst=SERVICE_MAC)
            / ARP(op=2, hwsrc=CLIENT_MAC, psrc=CLIENT_V4, hwdst=SERVICE_MAC, pdst=SERVICE_V4),
        ),
    ]


def sample_frames() -> list[SampleFrame]:
    """The sample conversation, in capture order."""
    return [SampleFrame(what, bytes(pkt)) for what, pkt in _conversation()]


def write_sample(path: Path) -> int:
    """Write the sample as an Ethernet pcap; returns the number of frames written."""
    frames = sample_frames()
    with CaptureWriter(path, LinkType.ETHERNET) as out:
        for i, sample in enumerate(frames):
            usec = i * STEP_USEC
            out.write(START_SEC + usec // 1_000_000, usec % 1_000_000, sample.frame)
    return len(frames)
