"""A malformed-frame corpus through the translator, both ways (robustness, item 1).

About 20 valid seed frames (IPv4/ARP from the LAN, IPv6/NDP from the service link) are
built with scapy, then each is truncated at every offset, given wrong lengths and header
lengths, a flipped header checksum and random single-byte corruption; random byte
strings are added. Every frame goes through the translator in both directions, so each
side also sees the other side's frames. The properties:

* no exception escapes, and none is swallowed either (no INTERNAL_ERROR drop);
* every input is accounted for: frames out, or a named drop (or both), never neither;
  the drop counters add up to the number of dropped results; frames_in = corpus size;
* memory stays flat: a second pass over the corpus does not grow the heap.
"""

from __future__ import annotations

import collections
import gc
import random
import struct
import tracemalloc

from scapy.layers.inet import ICMP, TCP, UDP, IPOption_LSRR, IPOption_NOP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    PadN,
)
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet
from xlat_frames import (
    LAN_IP,
    LAN_IP6,
    LAN_MAC,
    NO_IP,
    ROUTER_IP,
    SVC_IP,
    SVC_IP6,
    SVC_MAC,
    TO_LAN,
    TO_SERVICE,
    ip4,
    ip6,
    lan_frame,
    svc_frame,
)

from cjb.gateway.xlat import DropReason, Translator, XlatConfig

ETH = 14
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_ARP = 0x0806
CORRUPTIONS_PER_SEED = 50
RANDOM_FRAMES = 2000
MEMORY_GROWTH_LIMIT = 256 * 1024


def _v4_seeds() -> list[bytes]:
    """Frames as they arrive from the LAN: IPv4 and ARP."""
    quoted_tcp = ip4(src=SVC_IP, dst=LAN_IP) / TCP(sport=80, dport=40000, flags="S")
    quoted_unreach = ip4(src=SVC_IP, dst=LAN_IP) / ICMP(type=3, code=1) / bytes(quoted_tcp)[:28]
    return [
        lan_frame(ip4() / TCP(sport=40000, dport=80, flags="S", options=[("MSS", 1460)])),
        lan_frame(ip4() / UDP(sport=5353, dport=53) / (b"q" * 32)),
        lan_frame(ip4(flags="DF") / UDP(sport=1, dport=9) / (bytes(range(256)) * 5)),
        lan_frame(ip4() / UDP(sport=1, dport=9, chksum=0) / b"zero checksum"),
        lan_frame(ip4() / ICMP(type=8, id=7, seq=1) / b"ping"),
        # ICMP errors quoting TCP, UDP and (an error in an error) an ICMP error.
        lan_frame(ip4(src=LAN_IP, dst=SVC_IP) / ICMP(type=3, code=3) / bytes(quoted_tcp)),
        lan_frame(ip4() / ICMP(type=11, code=0) / bytes(ip4(dst=LAN_IP) / UDP() / (b"x" * 8))),
        lan_frame(ip4() / ICMP(type=11, code=0) / bytes(quoted_unreach)),
        lan_frame(ip4() / ICMP(type=12, code=0, ptr=20) / bytes(quoted_tcp)),
        # Options: a long NOP list (IHL 15) and an unexpired loose source route.
        lan_frame(ip4(options=[IPOption_NOP()] * 40) / UDP(sport=2, dport=9) / b"nops"),
        lan_frame(
            ip4(options=[IPOption_LSRR(routers=[ROUTER_IP, SVC_IP], pointer=4)])
            / TCP(sport=3, dport=80)
        ),
        # Fragments: first, overlapping middle, tiny (8 bytes), last, and a fragmented ICMP.
        lan_frame(ip4(id=9, flags="MF") / UDP(sport=4, dport=9, len=108) / (b"f" * 40)),
        lan_frame(ip4(id=9, flags="MF", frag=3, proto=17) / (b"o" * 48)),
        lan_frame(ip4(id=9, flags="MF", frag=1, proto=6) / (b"t" * 8)),
        lan_frame(ip4(id=9, frag=0, flags="MF", proto=6) / (b"h" * 8)),
        lan_frame(ip4(id=9, frag=12, proto=17) / (b"l" * 12)),
        lan_frame(ip4(id=10, flags="MF") / ICMP(type=8) / (b"i" * 32)),
        # ARP request, reply and probe.
        lan_frame(ARP(op=1, hwsrc=LAN_MAC, psrc=LAN_IP, pdst=SVC_IP), dst="ff:ff:ff:ff:ff:ff"),
        lan_frame(ARP(op=2, hwsrc=LAN_MAC, psrc=LAN_IP, hwdst=SVC_MAC, pdst=SVC_IP)),
        lan_frame(ARP(op=1, hwsrc=LAN_MAC, psrc=NO_IP, pdst=LAN_IP), dst="ff:ff:ff:ff:ff:ff"),
    ]


def _v6_seeds() -> list[bytes]:
    """Frames as they arrive from the service link: IPv6 and NDP."""
    quoted_tcp = ip6(src=LAN_IP6, dst=SVC_IP6) / TCP(sport=40000, dport=80, flags="S")
    quoted_error = ip6(src=LAN_IP6, dst=SVC_IP6) / ICMPv6DestUnreach(code=4) / bytes(quoted_tcp)

    def nested(dest_opts: int) -> Packet:
        chain = IPv6ExtHdrHopByHop(options=[PadN(optdata=b"\x00" * 4)])
        for i in range(dest_opts):
            chain = chain / IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\x00" * (4 + 8 * (i % 2)))])
        return chain / UDP(sport=7, dport=9) / b"nested"

    ns_target = "fe80::c0a8:a"
    return [
        svc_frame(ip6() / TCP(sport=80, dport=40000, flags="SA")),
        svc_frame(ip6() / UDP(sport=53, dport=5353) / (b"a" * 64)),
        svc_frame(ip6() / UDP(sport=9, dport=1) / (bytes(range(256)) * 5)),
        svc_frame(ip6() / ICMPv6EchoRequest(id=7, seq=1, data=b"ping6")),
        svc_frame(
            ip6(dst="ff02::1:ffa8:a")
            / ICMPv6ND_NS(tgt=ns_target)
            / ICMPv6NDOptSrcLLAddr(lladdr=SVC_MAC),
            dst="33:33:ff:a8:00:0a",
        ),
        svc_frame(
            ip6(hlim=255)
            / ICMPv6ND_NA(tgt=SVC_IP6, R=0, S=1, O=1)
            / ICMPv6NDOptDstLLAddr(lladdr=SVC_MAC)
        ),
        # Nested extension headers: HBH + 7 destination options (8 headers, the parser's
        # bound), and HBH + 8 (one over it), then UDP.
        svc_frame(ip6() / nested(7)),
        svc_frame(ip6() / nested(8)),
        # A huge option list: one hop-by-hop header of 250 bytes of PadN.
        svc_frame(ip6() / IPv6ExtHdrHopByHop(options=[PadN(optdata=b"\x00" * 250)]) / UDP()),
        svc_frame(ip6() / IPv6ExtHdrRouting(addresses=[LAN_IP6], segleft=1) / UDP()),
        svc_frame(ip6() / IPv6ExtHdrRouting(addresses=[LAN_IP6], segleft=0) / UDP()),
        # Fragment headers: first fragment, tiny (8 bytes) middle, atomic, fragmented ICMPv6.
        svc_frame(ip6() / IPv6ExtHdrFragment(id=5, m=1) / UDP(len=200) / (b"F" * 48)),
        svc_frame(ip6() / IPv6ExtHdrFragment(id=5, m=1, offset=1, nh=17) / (b"T" * 8)),
        svc_frame(ip6() / IPv6ExtHdrFragment(id=6, m=0, offset=0) / TCP(sport=1, dport=2)),
        svc_frame(ip6() / IPv6ExtHdrFragment(id=7, m=1) / ICMPv6EchoRequest(data=b"e" * 32)),
        # ICMPv6 errors quoting TCP and (an error in an error) an ICMPv6 error.
        svc_frame(ip6() / ICMPv6DestUnreach(code=1) / bytes(quoted_tcp)),
        svc_frame(ip6() / ICMPv6PacketTooBig(mtu=1280) / bytes(quoted_tcp)),
        svc_frame(ip6() / ICMPv6TimeExceeded() / bytes(quoted_error)),
        svc_frame(ip6() / ICMPv6ParamProblem(code=0, ptr=6) / bytes(quoted_tcp)),
    ]


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _with_v4_header(frame: bytes, *, ihl: int | None = None, total: int | None = None) -> bytes:
    """The IPv4 frame with its IHL or total length replaced, checksum made valid again
    (so the length checks themselves are what rejects it)."""
    b = bytearray(frame)
    if ihl is not None:
        b[ETH] = 0x40 | ihl
    if total is not None:
        b[ETH + 2 : ETH + 4] = total.to_bytes(2, "big")
    hlen = max(20, (b[ETH] & 0x0F) * 4)
    if len(b) >= ETH + hlen:
        b[ETH + 10 : ETH + 12] = b"\x00\x00"
        b[ETH + 10 : ETH + 12] = _ip_checksum(bytes(b[ETH : ETH + hlen])).to_bytes(2, "big")
    return bytes(b)


def _mutations(frame: bytes, rng: random.Random) -> list[bytes]:
    out = [frame[:n] for n in range(len(frame))]  # truncated at every offset
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == ETHERTYPE_IPV4:
        true_len = int.from_bytes(frame[ETH + 2 : ETH + 4], "big")
        for total in (0, 1, 19, 20, true_len - 1, true_len + 1, true_len + 100, 0xFFFF):
            out.append(_with_v4_header(frame, total=total))
        for ihl in (0, 1, 4, 5, 6, 15):
            out.append(_with_v4_header(frame, ihl=ihl))
        flipped = bytearray(frame)
        flipped[ETH + 10] ^= 0xFF
        out.append(bytes(flipped))
    elif ethertype == ETHERTYPE_IPV6:
        true_len = int.from_bytes(frame[ETH + 4 : ETH + 6], "big")
        for plen in (0, 1, 7, true_len - 1, true_len + 1, true_len + 100, 0xFFFF):
            b = bytearray(frame)
            b[ETH + 4 : ETH + 6] = (plen & 0xFFFF).to_bytes(2, "big")
            out.append(bytes(b))
        # IPv6 has no header checksum: break the upper-layer checksum via the last byte.
        b = bytearray(frame)
        b[-1] ^= 0xFF
        out.append(bytes(b))
    for _ in range(CORRUPTIONS_PER_SEED):
        b = bytearray(frame)
        at = rng.randrange(len(b))
        b[at] = (b[at] + rng.randrange(1, 256)) & 0xFF  # always a different byte
        out.append(bytes(b))
    return out


def build_corpus() -> list[bytes]:
    rng = random.Random(7)  # noqa: S311 - a reproducible corpus, not a secret
    corpus: list[bytes] = []
    for seed in _v4_seeds() + _v6_seeds():
        corpus.append(seed)
        corpus.extend(_mutations(seed, rng))
    for _ in range(RANDOM_FRAMES):
        corpus.append(rng.randbytes(rng.randint(0, 1600)))
    # Random bytes behind a valid Ethernet header, so they reach the IP/ARP parsers.
    for i in range(RANDOM_FRAMES // 2):
        ethertype = (ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_ARP)[i % 3]
        header = bytes(Ether(dst=SVC_MAC, src=LAN_MAC, type=ethertype))
        body = bytearray(rng.randbytes(rng.randint(0, 200)))
        if body and ethertype != ETHERTYPE_ARP:
            body[0] = (0x45, 0x60, 0)[i % 3] | (body[0] & 0x0F if i % 3 == 0 else 0)
        corpus.append(header + bytes(body))
    return corpus


def _one_pass(translators: dict, corpus: list[bytes], histogram: collections.Counter) -> None:
    """Translate the whole corpus both ways, checking each result as it comes."""
    for direction, translator in translators.items():
        translate = translator.translate
        for frame in corpus:
            result = translate(frame, direction)
            drop = result.drop
            assert drop is not DropReason.INTERNAL_ERROR, (
                f"{direction}: translator raised on frame {frame.hex()}"
            )
            assert result.emits or drop is not None, (
                f"{direction}: frame neither emitted nor dropped: {frame.hex()}"
            )
            histogram[(direction, drop)] += 1


def test_malformed_corpus_is_accounted_for_and_memory_is_flat() -> None:
    corpus = build_corpus()
    assert len(corpus) >= 10_000
    translators = {d: Translator(XlatConfig()) for d in (TO_SERVICE, TO_LAN)}

    histogram: collections.Counter = collections.Counter()
    _one_pass(translators, corpus, histogram)

    for direction, translator in translators.items():
        counters = translator.counters
        assert counters.frames_in[direction] == len(corpus)
        assert sum(counters.frames_in.values()) == len(corpus)
        dropped = sum(n for (d, reason), n in histogram.items() if d is direction and reason)
        assert counters.total_drops() == dropped
        assert counters.drops[DropReason.INTERNAL_ERROR] == 0
        for reason in DropReason:
            assert counters.drops[reason] == histogram[(direction, reason)], reason

    # Memory: the first pass warmed every cache; a second pass must not grow the heap.
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        _one_pass(translators, corpus, collections.Counter())
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    growth = after - before
    assert growth < MEMORY_GROWTH_LIMIT, f"heap grew {growth} bytes over a second pass"

    tried = 2 * len(corpus)  # each frame, both ways
    survived = sum(
        n for (_, reason), n in histogram.items() if reason is not DropReason.INTERNAL_ERROR
    )
    lost = tried - sum(histogram.values())
    print(
        f"\nmalformed corpus: {tried} tried, {survived} survived, {lost} lost"
        f" (heap growth over a second pass: {growth} B)"
    )
    for direction in (TO_SERVICE, TO_LAN):
        drops = {
            (reason.value if reason else "emitted"): n
            for (d, reason), n in sorted(histogram.items(), key=lambda kv: -kv[1])
            if d is direction
        }
        print(f"  {direction.value}: {drops}")
