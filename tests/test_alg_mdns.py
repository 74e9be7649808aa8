"""mDNS rewriting (RFC 6762) in the translator's discovery ALG: vectors, then hostile input."""

from __future__ import annotations

import socket
import struct

import dns.message
import dns.rdatatype
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from zeroconf import DNSAddress, DNSIncoming, DNSNsec, DNSOutgoing, DNSPointer, DNSService, const

from cjb.gateway.xlat.alg import mdns
from cjb.gateway.xlat.alg.mdns import Outcome

LIMIT = 1472
UNIQUE = const._CLASS_IN | const._CLASS_UNIQUE


def printer_response() -> bytes:
    """What python-zeroconf sends for a registered printer: PTR, SRV, A, NSEC (compressed)."""
    out = DNSOutgoing(const._FLAGS_QR_RESPONSE | const._FLAGS_AA)
    out.add_answer_at_time(
        DNSPointer(
            "_ipp._tcp.local.", const._TYPE_PTR, const._CLASS_IN, 4500, "Printer._ipp._tcp.local."
        ),
        0,
    )
    out.add_answer_at_time(
        DNSService(
            "Printer._ipp._tcp.local.", const._TYPE_SRV, UNIQUE, 120, 0, 0, 631, "printer.local."
        ),
        0,
    )
    out.add_additional_answer(
        DNSAddress("printer.local.", const._TYPE_A, UNIQUE, 120, socket.inet_aton("192.168.0.20"))
    )
    out.add_additional_answer(
        DNSNsec("printer.local.", const._TYPE_NSEC, UNIQUE, 120, "printer.local.", [const._TYPE_A])
    )
    (packet,) = out.packets()
    return packet


def records(message: bytes) -> list[tuple[str, int, str, bool]]:
    inc = DNSIncoming(message)
    assert inc.valid
    return [(r.name, r.type, str(getattr(r, "data", "")), r.unique) for r in inc.answers()]


def test_zeroconf_printer_a_becomes_aaaa_fe80_and_nsec_follows() -> None:
    original = printer_response()
    r = mdns.rewrite_to_service(original, LIMIT)
    assert r.outcome is Outcome.REWRITTEN and r.payload is not None
    inc = DNSIncoming(r.payload)
    assert inc.valid
    by_type = {rec.type: rec for rec in inc.answers()}
    assert const._TYPE_A not in by_type
    aaaa = by_type[const._TYPE_AAAA]
    assert socket.inet_ntop(socket.AF_INET6, aaaa.address) == "fe80::c0a8:14"  # type: ignore[attr-defined]
    assert aaaa.unique  # RFC 6762 §10.2 cache-flush bit kept
    nsec = by_type[const._TYPE_NSEC]
    assert nsec.rdtypes == [const._TYPE_AAAA]  # type: ignore[attr-defined]
    srv = by_type[const._TYPE_SRV]
    assert srv.server == "printer.local." and srv.port == 631  # type: ignore[attr-defined]


def test_round_trip_gives_the_same_records_back() -> None:
    original = printer_response()
    there = mdns.rewrite_to_service(original, LIMIT).payload
    assert there is not None
    back = mdns.rewrite_to_lan(there, LIMIT)
    assert back.outcome is Outcome.REWRITTEN and back.payload is not None
    assert records(back.payload) == records(original)


def _name(*labels: bytes) -> bytes:
    return b"".join(bytes([len(x)]) + x for x in labels) + b"\x00"


def hand_built_with_pointers() -> bytes:
    """Two A records and an unknown type, every later name a compression pointer."""
    header = struct.pack("!HHHHHH", 0, 0x8400, 0, 4, 0, 0)
    host = _name(b"nas", b"local")  # at offset 12
    rr_a1 = host + struct.pack("!HHIH", 1, 1, 120, 4) + bytes([192, 168, 0, 30])
    ptr_host = b"\xc0\x0c"
    rr_a2 = ptr_host + struct.pack("!HHIH", 1, 1, 120, 4) + bytes([192, 168, 0, 31])
    unknown = b"\x07private" + b"\xc0\x10"  # "private.local." via a pointer to "local"
    rr_unknown = unknown + struct.pack("!HHIH", 0xFF00, 1, 60, 3) + b"xyz"
    rr_aaaa_global = (
        ptr_host
        + struct.pack("!HHIH", 28, 1, 120, 16)
        + bytes.fromhex("20010db8000000000000000000000001")
    )
    return header + rr_a1 + rr_a2 + rr_unknown + rr_aaaa_global


def test_pointers_multiple_a_and_unknown_type_reencode_validly() -> None:
    r = mdns.rewrite_to_service(hand_built_with_pointers(), LIMIT)
    assert r.outcome is Outcome.REWRITTEN and r.payload is not None
    # dnspython's strict unicast-DNS parser accepts it: every pointer points backwards
    # at a name in the output (RFC 1035 §4.1.4).
    msg = dns.message.from_wire(r.payload)
    got = [
        (rrset.name.to_text(), rrset.rdtype, [rd.to_text() for rd in rrset]) for rrset in msg.answer
    ]
    assert got == [
        ("nas.local.", dns.rdatatype.AAAA, ["fe80::c0a8:1e", "fe80::c0a8:1f", "2001:db8::1"]),
        ("private.local.", 0xFF00, ["\\# 3 78797a"]),
    ]


def test_link_local_aaaa_of_the_other_link_is_removed_and_loopback_a_kept() -> None:
    header = struct.pack("!HHHHHH", 0, 0x8400, 0, 2, 0, 0)
    host = _name(b"tv", b"local")
    body = (
        host
        + struct.pack("!HHIH", 28, 0x8001, 120, 16)
        + bytes.fromhex("fe80000000000000021122fffe334455")
    )
    body += b"\xc0\x0c" + struct.pack("!HHIH", 1, 0x8001, 120, 4) + bytes([127, 0, 0, 1])
    r = mdns.rewrite_to_service(header + body, LIMIT)
    assert r.payload is not None
    inc = DNSIncoming(r.payload)
    assert [(a.type, str(getattr(a, "address", b"").hex())) for a in inc.answers()] == [
        (const._TYPE_A, "7f000001")
    ]


def query(qtype: int, qclass: int = 1, *more: tuple[int, int]) -> bytes:
    qs = [(qtype, qclass), *more]
    header = struct.pack("!HHHHHH", 0, 0, len(qs), 0, 0, 0)
    name = _name(b"printer", b"local")
    body = name + struct.pack("!HH", *qs[0])
    for qt, qc in qs[1:]:
        body += b"\xc0\x0c" + struct.pack("!HH", qt, qc)
    return header + body


def questions(message: bytes) -> list[tuple[int, int]]:
    return [
        (q.type, q.class_ | (0x8000 if q.unicast else 0)) for q in DNSIncoming(message).questions
    ]


def test_service_host_aaaa_question_asks_the_lan_for_a_keeping_the_qu_bit() -> None:
    r = mdns.rewrite_to_lan(query(28, 0x8001), LIMIT)
    assert r.payload is not None
    assert questions(r.payload) == [(1, 0x8001)]


def test_lan_a_question_becomes_aaaa_and_a_plus_aaaa_collapse_to_one() -> None:
    r = mdns.rewrite_to_service(query(1, 1, (28, 1)), LIMIT)
    assert r.payload is not None
    assert questions(r.payload) == [(28, 1)]


def test_ptr_question_is_left_alone() -> None:
    original = query(12)
    assert mdns.rewrite_to_service(original, LIMIT).outcome is Outcome.UNCHANGED
    assert mdns.rewrite_to_lan(original, LIMIT).outcome is Outcome.UNCHANGED


def many_addresses(n: int) -> bytes:
    """One answer with an A record, then `n` additional A records (each +12 as AAAA)."""
    header = struct.pack("!HHHHHH", 0, 0x8400, 0, 1, 0, n)
    host = _name(b"big", b"local")
    body = host + struct.pack("!HHIH", 1, 1, 120, 4) + bytes([10, 0, 0, 1])
    for i in range(n):
        body += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 120, 4) + bytes([10, 0, 1, i])
    return header + body


def test_growth_past_the_link_sheds_additional_records_first() -> None:
    original = many_addresses(60)  # 37 + 60*16 = 997 bytes; +61*12 as AAAA
    assert len(original) < 1200
    r = mdns.rewrite_to_service(original, 1200)
    assert r.outcome is Outcome.TRIMMED and r.payload is not None
    assert len(r.payload) <= 1200
    inc = DNSIncoming(r.payload)
    assert inc.num_answers == 1 and 0 < inc.num_additionals < 60
    assert all(a.type == const._TYPE_AAAA for a in inc.answers())


def test_answers_that_cannot_fit_pass_unchanged_and_say_so() -> None:
    header = struct.pack("!HHHHHH", 0, 0x8400, 0, 70, 0, 0)
    body = _name(b"big", b"local") + struct.pack("!HHIH", 1, 1, 120, 4) + bytes(4)[:3] + b"\x01"
    body += b"".join(
        b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 120, 4) + bytes([10, 0, 2, i]) for i in range(69)
    )
    assert len(header + body) < 1300
    r = mdns.rewrite_to_service(header + body, 1300)
    assert r.outcome is Outcome.TOO_BIG and r.payload is None


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"\x00" * 11,
        struct.pack("!HHHHHH", 0, 0x8400, 0, 1, 0, 0) + b"\xc0\x0c" + bytes(10),  # self-pointer
        struct.pack("!HHHHHH", 0, 0x8400, 0, 1, 0, 0) + b"\xc0\x20" + bytes(30),  # forward
        struct.pack("!HHHHHH", 0, 0x8400, 0, 65535, 65535, 65535),  # absurd counts
        struct.pack("!HHHHHH", 0, 0x8400, 0, 1, 0, 0) + b"\x80abc\x00" + bytes(10),  # label type
        struct.pack("!HHHHHH", 0, 0x8400, 0, 1, 0, 0)
        + b"\x00"
        + struct.pack("!HHIH", 1, 1, 1, 5)
        + bytes(5),
        bytes(9001),
    ],
    ids=[
        "empty",
        "short-header",
        "self-pointer",
        "forward-pointer",
        "counts",
        "label-type",
        "a-rdlen-5",
        "over-9000",
    ],
)
def test_malformed_messages_pass_unchanged(message: bytes) -> None:
    for rewrite in (mdns.rewrite_to_service, mdns.rewrite_to_lan):
        r = rewrite(message, LIMIT)
        assert r.payload is None
        assert r.outcome in (Outcome.NOT_MDNS, Outcome.UNCHANGED)


def test_every_truncation_of_a_real_response_is_handled() -> None:
    original = printer_response()
    for cut in range(len(original)):
        r = mdns.rewrite_to_service(original[:cut], LIMIT)
        assert r.outcome is Outcome.NOT_MDNS and r.payload is None


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.binary(max_size=600), st.integers(0, 600), st.binary(max_size=8))
def test_mutated_responses_never_raise(noise: bytes, at: int, splice: bytes) -> None:
    base = printer_response()
    mutated = base[:at] + splice + base[at + len(splice) :] + noise[:0]
    for message in (mutated, noise):
        for rewrite in (mdns.rewrite_to_service, mdns.rewrite_to_lan):
            r = rewrite(message, LIMIT)
            if r.payload is not None:
                assert len(r.payload) <= LIMIT
                assert DNSIncoming(r.payload).valid
