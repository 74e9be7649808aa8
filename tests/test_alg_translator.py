"""The discovery ALG inside the translator: whole frames in and out, lengths and checksums
checked with scapy as an independent dissector."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from xlat_frames import checksum_problems
from zeroconf import DNSIncoming, const

from cjb.gateway.xlat import Direction, DropReason, Side, Translator, XlatConfig
from cjb.gateway.xlat.alg import ALG_COUNTERS
from tests.test_alg_mdns import printer_response, query
from tests.test_alg_ssdp import NOTIFY, RESPONSE

LAN_MAC = "02:00:00:00:00:14"
SVC_MAC = "02:00:00:00:00:64"


def v4_frame(src: str, dst: str, sport: int, dport: int, payload: bytes, **ip: object) -> bytes:
    dmac = "01:00:5e:00:00:fb" if dst.startswith("224.") else SVC_MAC
    return bytes(
        Ether(src=LAN_MAC, dst=dmac)
        / IP(src=src, dst=dst, **ip)
        / UDP(sport=sport, dport=dport)
        / payload
    )


def v6_frame(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    return bytes(
        Ether(src=SVC_MAC, dst=LAN_MAC)
        / IPv6(src=src, dst=dst, hlim=255)
        / UDP(sport=sport, dport=dport)
        / payload
    )


def checksum_ok(pkt: Ether) -> bool:
    """Every checksum of the frame verifies (xlat_frames' independent RFC 1071 checker)."""
    return not checksum_problems(bytes(pkt))


def only_emit(translator: Translator, frame: bytes, direction: Direction) -> Ether:
    result = translator.translate(frame, direction)
    assert result.drop is None, result.drop
    (emit,) = result.emits
    assert emit.side is (Side.SERVICE if direction is Direction.TO_SERVICE else Side.LAN)
    return Ether(emit.frame)


@pytest.mark.parametrize("fast_path", [True, False])
def test_mdns_response_to_service_gets_aaaa_and_right_lengths(fast_path: bool) -> None:
    frame = v4_frame("192.168.0.20", "224.0.0.251", 5353, 5353, printer_response(), ttl=255)
    out = only_emit(Translator(XlatConfig(), fast_path=fast_path), frame, Direction.TO_SERVICE)
    ip6, udp = out[IPv6], out[UDP]
    assert (ip6.src, ip6.dst, ip6.hlim) == ("fe80::c0a8:14", "ff02::fb", 255)
    payload = bytes(udp.payload)
    assert ip6.plen == udp.len == 8 + len(payload)
    assert len(payload) > len(printer_response())  # A (4) -> AAAA (16)
    assert checksum_ok(out)
    types = {r.type for r in DNSIncoming(payload).answers()}
    assert const._TYPE_AAAA in types and const._TYPE_A not in types


@pytest.mark.parametrize("fast_path", [True, False])
def test_unicast_ssdp_response_is_rewritten_even_on_the_fast_path(fast_path: bool) -> None:
    frame = v4_frame("192.168.0.20", "192.168.0.100", 1900, 50000, RESPONSE)
    out = only_emit(Translator(XlatConfig(), fast_path=fast_path), frame, Direction.TO_SERVICE)
    payload = bytes(out[UDP].payload)
    assert b"location: http://[fe80::c0a8:14]/desc.xml" in payload
    assert out[IPv6].plen == out[UDP].len == 8 + len(payload)
    assert checksum_ok(out)


def test_service_query_for_aaaa_reaches_the_lan_as_a_with_valid_checksums() -> None:
    frame = v6_frame("fe80::c0a8:64", "ff02::fb", 5353, 5353, query(28, 0x8001))
    out = only_emit(Translator(), frame, Direction.TO_LAN)
    ip4 = out[IP]
    assert (ip4.src, ip4.dst, ip4.ttl) == ("192.168.0.100", "224.0.0.251", 255)
    copy = out.copy()
    del copy[IP].chksum
    assert Ether(bytes(copy))[IP].chksum == ip4.chksum
    assert checksum_ok(out)
    (q,) = DNSIncoming(bytes(out[UDP].payload)).questions
    assert q.type == const._TYPE_A and q.unicast


@pytest.mark.parametrize("fast_path", [True, False])
def test_ssdp_notify_to_lan_shrinks_and_stays_valid(fast_path: bool) -> None:
    there = only_emit(
        Translator(),
        v4_frame("192.168.0.20", "239.255.255.250", 1900, 1900, NOTIFY),
        Direction.TO_SERVICE,
    )
    payload6 = bytes(there[UDP].payload)
    back = only_emit(
        Translator(XlatConfig(), fast_path=fast_path),
        v6_frame("fe80::c0a8:14", "fe80::c0a8:64", 1900, 1900, payload6),
        Direction.TO_LAN,
    )
    assert bytes(back[UDP].payload) == NOTIFY
    assert back[IP].len == 20 + back[UDP].len and checksum_ok(back)


def test_bad_checksum_is_not_laundered() -> None:
    frame = bytearray(v4_frame("192.168.0.20", "224.0.0.251", 5353, 5353, printer_response()))
    frame[40] ^= 0xFF  # UDP checksum (14 + 20 + 6)
    before = ALG_COUNTERS["mdns-bad-checksum"]
    out = only_emit(Translator(), bytes(frame), Direction.TO_SERVICE)
    assert bytes(out[UDP].payload) == printer_response()  # not rewritten
    assert not checksum_ok(out)  # still bad after translation
    assert ALG_COUNTERS["mdns-bad-checksum"] == before + 1


def test_zero_ipv4_checksum_is_computed_under_the_compute_policy() -> None:
    pkt = Ether(v4_frame("192.168.0.20", "224.0.0.251", 5353, 5353, printer_response()))
    pkt[UDP].chksum = 0
    out = only_emit(Translator(), bytes(pkt), Direction.TO_SERVICE)
    assert checksum_ok(out) and len(bytes(out[UDP].payload)) > len(printer_response())


def test_garbage_on_the_mdns_port_passes_unchanged_and_is_counted() -> None:
    before = ALG_COUNTERS["mdns-undecodable"]
    garbage = b"\x00\x00\x84\x00\x00\x00\x00\x05junk"
    out = only_emit(
        Translator(),
        v4_frame("192.168.0.20", "224.0.0.251", 5353, 5353, garbage),
        Direction.TO_SERVICE,
    )
    assert bytes(out[UDP].payload) == garbage and checksum_ok(out)
    assert ALG_COUNTERS["mdns-undecodable"] == before + 1


def test_fragments_are_not_rewritten() -> None:
    frame = v4_frame("192.168.0.20", "224.0.0.251", 5353, 5353, printer_response(), flags="MF")
    result = Translator().translate(frame, Direction.TO_SERVICE)
    assert result.drop is None
    assert printer_response()[:40] in result.emits[0].frame


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=700), st.sampled_from([5353, 1900]), st.booleans())
def test_any_payload_on_the_discovery_ports_translates_or_drops_never_errs(
    payload: bytes, port: int, to_service: bool
) -> None:
    if to_service:
        frame = v4_frame("192.168.0.20", "224.0.0.251", port, port, payload)
        direction = Direction.TO_SERVICE
    else:
        frame = v6_frame("fe80::c0a8:64", "ff02::fb", port, port, payload)
        direction = Direction.TO_LAN
    result = Translator().translate(frame, direction)
    assert result.drop is not DropReason.INTERNAL_ERROR
    for emit in result.emits:
        assert checksum_ok(Ether(emit.frame))  # a valid checksum in, a valid checksum out
