"""Property tests for the translator (docs/testing.md).

1. 4 -> 6 -> 4 gives the original frame back, byte for byte, for every translatable TCP,
   UDP and ICMP echo packet, modulo what RFC 7915 legitimately cannot carry:
   - the IPv4 Identification: an unfragmented IPv6 packet has no ID field (§4.1 adds no
     Fragment header for DF=0 packets that fit), so §5.1 generates a new one. The test
     puts the original ID back (and recomputes the header checksum) before comparing.
   - DF: §5.1 derives it from the size (DF=1 iff > 1260 bytes), so generation sets
     DF = (total length > 1260); other combinations cannot round-trip by design.
   - IPv4 options (§4.1: ignored, i.e. dropped) and UDP checksum 0 (§4.5: computed) are
     not generated.
2. 6 -> 4 -> 6 likewise, with flow label 0 (§4.1 sets it to 0) and no extension headers
   (§5.1 removes them).
3. Any byte string in either direction gives frames or a drop: never an exception, never
   DropReason.INTERNAL_ERROR (the translator catches and counts those).
4. Valid frames with random byte flips and truncations: the same.

Example counts are small by default (the file runs in well under 60 s on 2 cores, and is
derandomized so CI is repeatable). For a long, random run:
    CJB_HYPOTHESIS_PROFILE=xlat-thorough python -m pytest tests/test_xlat_properties.py
"""

from __future__ import annotations

import ipaddress
import os

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
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
    icmp4_raw,
    icmp6_raw,
)

from cjb.gateway.xlat import (
    Direction,
    DropReason,
    Side,
    Translator,
    UdpZeroChecksum,
    XlatConfig,
)

settings.register_profile(
    "xlat-ci",
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "xlat-thorough",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# Applied per test (not load_profile) so other test modules keep their own settings.
PROFILE = settings.get_profile(os.environ.get("CJB_HYPOTHESIS_PROFILE", "xlat-ci"))

_CONFIGS = [
    XlatConfig(),
    XlatConfig(lan_mtu=576, service_mtu=1280),
    XlatConfig(lan_mtu=1500, service_mtu=1520, lowest_ipv6_mtu=1280),
    XlatConfig(lan_mtu=1400, service_mtu=1400, udp_zero_checksum=UdpZeroChecksum.DROP),
]

# ------------------------------------------------------------------ strategies

_first_octet = st.integers(1, 223).filter(lambda o: o != 127)
v4_unicast = st.builds(
    lambda a, b, c, d: f"{a}.{b}.{c}.{d}",
    _first_octet,
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
)
unicast_mac = st.builds(
    lambda first, rest: ":".join(f"{b:02x}" for b in bytes((first & 0xFE,)) + rest),
    st.integers(0, 255),
    st.binary(min_size=5, max_size=5),
)
_GROUP_MACS = {
    "224.0.0.251": "01:00:5e:00:00:fb",
    "239.255.255.250": "01:00:5e:7f:ff:fa",
    "224.0.0.252": "01:00:5e:00:00:fc",
}
_GROUP_MACS6 = {
    "ff02::fb": "33:33:00:00:00:fb",
    "ff02::c": "33:33:00:00:00:0c",
    "ff02::1:3": "33:33:00:01:00:03",
}


def _v6(v4: str) -> str:
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(10) + ipaddress.IPv4Address(v4).packed))


@st.composite
def transport(draw, family: int, room: int):
    """A TCP, UDP or ICMP echo segment (scapy fills valid checksums in later)."""
    kind = draw(st.sampled_from(["tcp", "udp", "echo"]))
    data = draw(st.binary(max_size=max(0, room - 20)))
    if kind == "tcp":
        return TCP(
            sport=draw(st.integers(0, 65535)),
            dport=draw(st.integers(0, 65535)),
            seq=draw(st.integers(0, 2**32 - 1)),
            ack=draw(st.integers(0, 2**32 - 1)),
            flags=draw(st.integers(0, 0x1FF)),
            window=draw(st.integers(0, 65535)),
        ) / Raw(data)
    if kind == "udp":
        return UDP(sport=draw(st.integers(0, 65535)), dport=draw(st.integers(0, 65535))) / Raw(data)
    ident, seq = draw(st.integers(0, 65535)), draw(st.integers(0, 65535))
    request = draw(st.booleans())
    if family == 4:
        return ICMP(type=8 if request else 0, id=ident, seq=seq) / Raw(data)
    cls = ICMPv6EchoRequest if request else ICMPv6EchoReply
    return cls(id=ident, seq=seq, data=data)


@st.composite
def ipv4_frames(draw) -> bytes:
    """Translatable IPv4 frames whose every field can survive 4 -> 6 -> 4 (see docstring)."""
    src = draw(v4_unicast)
    eth_src = draw(unicast_mac)
    if draw(st.integers(0, 4)) == 0:
        dst = draw(st.sampled_from(sorted(_GROUP_MACS)))
        eth_dst = _GROUP_MACS[dst]
    else:
        dst, eth_dst = draw(v4_unicast), draw(unicast_mac)
    size = draw(st.sampled_from([40, 200, 1260, 1261, 1500]) | st.integers(28, 1500))
    l4 = draw(transport(4, size - 20))
    ip = IP(
        src=src,
        dst=dst,
        tos=draw(st.integers(0, 255)),
        ttl=draw(st.integers(0, 255)),
        id=draw(st.integers(0, 65535)),
    )
    pkt = IP(bytes(ip / l4))
    if pkt.len > 1500:
        pkt = IP(bytes(ip / l4)[:1500])
        pkt.len = None
        pkt.chksum = None
        pkt = IP(bytes(pkt))
    # RFC 7915 §5.1 DF rule: the only DF value that can come back
    pkt.flags = "DF" if pkt.len > 1260 else 0
    pkt.chksum = None
    frame = bytes(Ether(dst=eth_dst, src=eth_src) / pkt)
    return _fix_transport_checksum(frame, 4)


@st.composite
def ipv6_frames(draw) -> bytes:
    src = _v6(draw(v4_unicast))
    eth_src = draw(unicast_mac)
    if draw(st.integers(0, 4)) == 0:
        dst = draw(st.sampled_from(sorted(_GROUP_MACS6)))
        eth_dst = _GROUP_MACS6[dst]
    else:
        dst, eth_dst = _v6(draw(v4_unicast)), draw(unicast_mac)
    size = draw(st.sampled_from([28, 200, 1260, 1261, 1500]) | st.integers(28, 1500))
    l4 = draw(transport(6, size - 20))
    pkt = IPv6(src=src, dst=dst, tc=draw(st.integers(0, 255)), hlim=draw(st.integers(0, 255)))
    raw = bytes(pkt / l4)
    raw = raw[: 40 + 1480]  # IPv4 form must fit the LAN MTU
    frame = bytes(Ether(dst=eth_dst, src=eth_src, type=0x86DD)) + raw
    frame = frame[:18] + (len(raw) - 40).to_bytes(2, "big") + frame[20:]
    return _fix_transport_checksum(frame, 6)


def _fix_transport_checksum(frame: bytes, family: int) -> bytes:
    """Recompute the transport checksum with scapy after any trimming."""
    pkt = Ether(frame)
    layer = pkt[IP] if family == 4 else pkt[IPv6]
    upper = layer.payload
    for name in ("chksum", "cksum"):
        if name in upper.fields:
            del upper.fields[name]
    if family == 4:
        del layer.fields["chksum"]
    return bytes(Ether(bytes(pkt)))


def _run(translator: Translator, frame: bytes, direction: Direction) -> bytes:
    result = translator.translate(frame, direction)
    assert result.drop is None, f"dropped: {result.drop}"
    assert len(result.emits) == 1
    side = Side.SERVICE if direction is Direction.TO_SERVICE else Side.LAN
    assert result.emits[0].side is side
    return result.emits[0].frame


def _with_id(frame: bytes, ident: int) -> bytes:
    """Put an IPv4 ID back and recompute the header checksum (independently, by scapy)."""
    pkt = Ether(frame)
    pkt[IP].id = ident
    del pkt[IP].fields["chksum"]
    return bytes(pkt)


# ------------------------------------------------------------------ round trips


@settings(PROFILE)
@given(frame=ipv4_frames())
def test_4to6to4_returns_the_original(frame: bytes) -> None:
    translator = Translator()
    original = Ether(frame)[IP]
    assume(not (UDP in original and original[UDP].chksum == 0))
    v6 = _run(translator, frame, Direction.TO_SERVICE)
    back = _run(translator, v6, Direction.TO_LAN)
    _assert_same_but_zero_spelling(_with_id(back, original.id), frame, 14 + 20, original.proto)
    assert translator.counters.drops[DropReason.INTERNAL_ERROR] == 0


def _assert_same_but_zero_spelling(back: bytes, original: bytes, l4_at: int, proto: int) -> None:
    """Equal, except that an RFC 1624 update may spell a checksum of one's complement zero
    as 0x0000 where a fresh computation gave 0xFFFF (both verify; RFC 1624 §3)."""
    if back == original:
        return
    off = l4_at + {6: 16, 17: 6, 1: 2, 58: 2}[proto]
    assert {back[off : off + 2], original[off : off + 2]} == {b"\x00\x00", b"\xff\xff"}
    assert back[:off] == original[:off]
    assert back[off + 2 :] == original[off + 2 :]


@settings(PROFILE)
@given(frame=ipv4_frames(), delta=st.integers(1, 0xFFFE))
def test_4to6to4_corrupt_checksum_round_trips(frame: bytes, delta: int) -> None:
    """RFC 1624 adjustment is exact: a corrupt transport checksum comes back unchanged, up
    to the one's complement +0/-0 spelling (0x0000 == 0xFFFF)."""
    pkt = Ether(frame)
    upper = pkt[IP].payload
    field = "chksum"
    upper.fields[field] = (upper.fields.get(field, upper.chksum) + delta) % 0x10000
    assume(not (UDP in pkt and upper.fields[field] == 0))
    corrupt = bytes(pkt)
    translator = Translator()
    back = _run(translator, _run(translator, corrupt, Direction.TO_SERVICE), Direction.TO_LAN)
    _assert_same_but_zero_spelling(_with_id(back, pkt[IP].id), corrupt, 14 + 20, pkt[IP].proto)


@settings(PROFILE)
@given(frame=ipv6_frames())
def test_6to4to6_returns_the_original(frame: bytes) -> None:
    translator = Translator()
    v4 = _run(translator, frame, Direction.TO_LAN)
    back = _run(translator, v4, Direction.TO_SERVICE)
    _assert_same_but_zero_spelling(back, frame, 14 + 40, frame[14 + 6])
    assert translator.counters.drops[DropReason.INTERNAL_ERROR] == 0


# ------------------------------------------------------------------ never raise


def _check_no_internal_error(frame: bytes, direction: Direction, cfg: XlatConfig) -> None:
    translator = Translator(cfg)
    result = translator.translate(frame, direction)  # must not raise
    assert result.drop is not DropReason.INTERNAL_ERROR
    assert translator.counters.drops[DropReason.INTERNAL_ERROR] == 0
    assert result.emits or result.drop is not None, "neither frames nor a drop"
    for emit in result.emits:
        assert isinstance(emit.frame, bytes) and len(emit.frame) >= 14


directions = st.sampled_from(list(Direction))
configs = st.sampled_from(_CONFIGS)


@settings(PROFILE)
@given(frame=st.binary(max_size=200), direction=directions, cfg=configs)
def test_any_bytes_never_raise(frame: bytes, direction: Direction, cfg: XlatConfig) -> None:
    _check_no_internal_error(frame, direction, cfg)


@settings(PROFILE)
@given(
    ethertype=st.sampled_from([b"\x08\x00", b"\x86\xdd", b"\x08\x06", b"\x81\x00"]),
    body=st.binary(max_size=300),
    direction=directions,
    cfg=configs,
)
def test_any_body_behind_a_real_ethertype_never_raises(
    ethertype: bytes, body: bytes, direction: Direction, cfg: XlatConfig
) -> None:
    # Start IPv4 / IPv6 bodies with the right version nibble so parsing gets further.
    if ethertype == b"\x08\x00" and body:
        body = bytes((0x45,)) + body[1:]
    elif ethertype == b"\x86\xdd" and body:
        body = bytes((0x60,)) + body[1:]
    frame = bytes.fromhex(SVC_MAC.replace(":", "") + LAN_MAC.replace(":", "")) + ethertype + body
    _check_no_internal_error(frame, direction, cfg)


def _corpus() -> list[tuple[bytes, Direction]]:
    """Valid frames of every kind the translator handles, to mutate."""
    to_s, to_l = Direction.TO_SERVICE, Direction.TO_LAN

    def lan(p, dst=SVC_MAC):
        return bytes(Ether(dst=dst, src=LAN_MAC) / p)

    def svc(p, dst=LAN_MAC):
        return bytes(Ether(dst=dst, src=SVC_MAC) / p)

    v4 = IP(src=LAN_IP, dst=SVC_IP)
    v6 = IPv6(src=SVC_IP6, dst=LAN_IP6)
    quoted4 = bytes(IP(src=SVC_IP, dst=LAN_IP) / UDP(sport=1, dport=2) / Raw(bytes(40)))
    quoted6 = bytes(IPv6(src=LAN_IP6, dst=SVC_IP6) / TCP(sport=1, dport=2) / Raw(bytes(40)))
    ext = b"\x20\x00\xdf\xff" + bytes(4)
    frames = [
        (lan(v4 / TCP() / Raw(bytes(100))), to_s),
        (lan(v4 / UDP() / Raw(bytes(100))), to_s),
        (
            lan(
                IP(src=LAN_IP, dst=SVC_IP, options=[Raw(b"\x83\x07\x04" + bytes(4) + b"\x00")])
                / UDP()
            ),
            to_s,
        ),
        (lan(IP(src=LAN_IP, dst=SVC_IP, flags="MF", id=9) / Raw(bytes(UDP()) + bytes(64))), to_s),
        (lan(IP(src=LAN_IP, dst=SVC_IP, frag=8000, id=9, proto=17) / Raw(bytes(1400))), to_s),
        (lan(v4 / ICMP(type=8) / Raw(b"ping")), to_s),
        (lan(v4 / Raw(icmp4_raw(3, 4, b"\x00\x00\x05\x00", quoted4))), to_s),
        (
            lan(v4 / Raw(icmp4_raw(11, 0, b"\x00\x20\x00\x00", quoted4.ljust(128, b"\0") + ext))),
            to_s,
        ),
        (lan(v4 / Raw(icmp4_raw(12, 0, b"\x09\x00\x00\x00", quoted4))), to_s),
        (lan(IP(src=LAN_IP, dst=SVC_IP, flags="DF") / UDP() / Raw(bytes(1472))), to_s),
        (lan(ARP(op=1, psrc=LAN_IP, pdst=SVC_IP), dst="ff:ff:ff:ff:ff:ff"), to_s),
        (lan(ARP(op=2, psrc=LAN_IP, pdst=SVC_IP, hwdst=SVC_MAC)), to_s),
        (lan(ARP(op=1, psrc=NO_IP, pdst=LAN_IP), dst="ff:ff:ff:ff:ff:ff"), to_s),
        (svc(v6 / TCP() / Raw(bytes(100))), to_l),
        (svc(v6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / UDP() / Raw(bytes(50))), to_l),
        (svc(v6 / IPv6ExtHdrRouting(addresses=[SVC_IP6], segleft=1) / UDP()), to_l),
        (svc(v6 / IPv6ExtHdrFragment(id=0x10001, m=1) / UDP() / Raw(bytes(64))), to_l),
        (svc(v6 / IPv6ExtHdrFragment(id=0x10001, offset=8000, nh=17) / Raw(bytes(1400))), to_l),
        (svc(v6 / ICMPv6EchoRequest(data=b"ping")), to_l),
        (svc(v6 / UDP() / Raw(bytes(1400))), to_l),
        (
            svc(v6 / Raw(icmp6_raw(2, 0, (1400).to_bytes(4, "big"), quoted6, SVC_IP6, LAN_IP6))),
            to_l,
        ),
        (
            svc(
                IPv6(src=SVC_IP6, dst=LAN_IP6, nh=58)
                / Raw(
                    icmp6_raw(
                        1, 4, b"\x10\x00\x00\x00", quoted6.ljust(128, b"\0") + ext, SVC_IP6, LAN_IP6
                    )
                )
            ),
            to_l,
        ),
        (
            svc(
                IPv6(src=SVC_IP6, dst=LAN_IP6, nh=58)
                / Raw(icmp6_raw(4, 0, (7).to_bytes(4, "big"), quoted6, SVC_IP6, LAN_IP6))
            ),
            to_l,
        ),
        (
            svc(
                IPv6(src=SVC_IP6, dst="ff02::1:ffa8:a", hlim=255)
                / ICMPv6ND_NS(tgt=LAN_IP6)
                / ICMPv6NDOptSrcLLAddr(lladdr=SVC_MAC),
                dst="33:33:ff:a8:00:0a",
            ),
            to_l,
        ),
        (
            svc(
                IPv6(src=SVC_IP6, dst=LAN_IP6, hlim=255)
                / ICMPv6ND_NA(tgt=SVC_IP6, S=1)
                / ICMPv6NDOptDstLLAddr(lladdr=SVC_MAC)
            ),
            to_l,
        ),
        (
            svc(
                IPv6(src="::", dst="ff02::1:ffa8:64", hlim=255) / ICMPv6ND_NS(tgt=SVC_IP6),
                dst="33:33:ff:a8:00:64",
            ),
            to_l,
        ),
    ]
    return frames


_CORPUS = _corpus()


@settings(PROFILE)
@given(
    index=st.integers(0, len(_CORPUS) - 1),
    flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 255)), max_size=4),
    cut=st.none() | st.integers(0, 2000),
    swap_direction=st.booleans(),
    cfg=configs,
)
def test_mutated_valid_frames_never_raise(
    index: int,
    flips: list[tuple[int, int]],
    cut: int | None,
    swap_direction: bool,
    cfg: XlatConfig,
) -> None:
    frame, direction = _CORPUS[index]
    data = bytearray(frame)
    for pos, xor in flips:
        if data:
            data[pos % len(data)] ^= xor
    if cut is not None:
        del data[cut:]
    if swap_direction:
        direction = Direction.TO_LAN if direction is Direction.TO_SERVICE else Direction.TO_SERVICE
    _check_no_internal_error(bytes(data), direction, cfg)


def test_corpus_frames_are_valid_inputs() -> None:
    """The unmutated corpus exercises real paths (frames or a deliberate drop)."""
    for frame, direction in _CORPUS:
        for cfg in _CONFIGS:
            translator = Translator(cfg)
            result = translator.translate(frame, direction)
            assert result.drop is not DropReason.INTERNAL_ERROR, (frame.hex(), cfg)
