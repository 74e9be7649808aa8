"""PROXY protocol v2 codec: the spec's layout (proxy-protocol.txt §2.2), CJB TLVs, and
bad input becoming a reason, never an exception."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cjb.service import proxy_v2 as pp
from cjb.service.front import header_for
from cjb.service.resolve import Known
from cjb.service.tenant_address import client_address

SIG = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"


def _tcp6_vector() -> bytes:
    """Hand-built from §2.2: v2 PROXY, AF_INET6/STREAM, fe80::c0a8:a:40000 -> fe80::c0a8:64:80,
    TLV 0xE0 "t1" (tenant) and 0xE1 "ta" (interface)."""
    src = bytes.fromhex("fe80" + "00" * 10 + "c0a8000a")
    dst = bytes.fromhex("fe80" + "00" * 10 + "c0a80064")
    body = src + dst + struct.pack("!HH", 40000, 80) + b"\xe0\x00\x02t1" + b"\xe1\x00\x02ta"
    return SIG + b"\x21\x21" + struct.pack("!H", len(body)) + body


def _addresses(h: pp.ProxyHeader) -> tuple[str | None, int, str | None, int]:
    return (h.src_addr, h.src_port, h.dst_addr, h.dst_port)


def test_signature_is_the_specs() -> None:
    assert pp.SIGNATURE == SIG and len(SIG) == 12


def test_encode_matches_hand_built_vector() -> None:
    header = pp.ProxyHeader(
        pp.Command.PROXY,
        pp.Family.INET6,
        pp.Transport.STREAM,
        "fe80::c0a8:a",
        40000,
        "fe80::c0a8:64",
        80,
        pp.cjb_tlvs("t1", "ta"),
    )
    assert pp.encode(header) == _tcp6_vector()


def test_parse_hand_built_vector_with_trailing_payload() -> None:
    data = _tcp6_vector() + b"GET / HTTP/1.1\r\n"
    result = pp.parse(data)
    assert isinstance(result, pp.Parsed)
    h = result.header
    assert (h.command, h.family, h.transport) == (
        pp.Command.PROXY,
        pp.Family.INET6,
        pp.Transport.STREAM,
    )
    assert _addresses(h) == ("fe80::c0a8:a", 40000, "fe80::c0a8:64", 80)
    assert (h.tenant, h.ifname) == ("t1", "ta")
    assert data[result.consumed :] == b"GET / HTTP/1.1\r\n"


def test_ipv4_and_local_and_foreign_tlvs() -> None:
    v4 = pp.ProxyHeader(
        pp.Command.PROXY,
        pp.Family.INET,
        pp.Transport.STREAM,
        "192.168.0.10",
        1234,
        "192.168.0.100",
        80,
        ((0x04, b"\0\0"), (0x02, b"x.example")),
    )
    raw = pp.encode(v4)
    assert raw[12:16] == b"\x21\x11\x00" + bytes([12 + 5 + 12])
    parsed = pp.parse(raw)
    assert isinstance(parsed, pp.Parsed) and parsed.header == v4 and parsed.header.tenant is None

    # §2.2: LOCAL's address block must be ignored by the receiver.
    local = SIG + b"\x20\x21\x00\x24" + bytes(36)
    parsed = pp.parse(local)
    assert isinstance(parsed, pp.Parsed)
    assert parsed.header.command is pp.Command.LOCAL and parsed.header.src_addr is None


def test_every_truncation_needs_more_and_never_parses() -> None:
    full = _tcp6_vector()
    for n in range(len(full)):
        assert isinstance(pp.parse(full[:n]), pp.NeedMore), n


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "bad signature"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "bad signature"),
        (SIG + b"\x11\x21\x00\x00", "version 1"),
        (SIG + b"\x22\x21\x00\x00", "unknown command"),
        (SIG + b"\x21\x51\x00\x00", "unknown command or address family"),
        (SIG + b"\x21\x21\xff\xff", "exceeds the limit"),
        (SIG + b"\x21\x21\x00\x10" + bytes(16), "address block too short for INET6"),
        (SIG + b"\x21\x11\x00\x0e" + bytes(12) + b"\xe0\x00", "truncated TLV"),
        (SIG + b"\x21\x11\x00\x0f" + bytes(12) + b"\xe0\x00\x09", "runs past the end"),
        (SIG + b"\x21\x11\x00\x10" + bytes(12) + b"\xe0\x00\x01\xff", "not UTF-8"),
        (SIG + b"\x21\x11\x00\x12" + bytes(12) + b"\xe0\x00\x03../", "not a valid name"),
        (SIG + b"\x21\x11\x00\x14" + bytes(12) + b"\xe0\x00\x01a\xe0\x00\x01b", "appears twice"),
    ],
)
def test_bad_input_is_a_reason(data: bytes, reason: str) -> None:
    result = pp.parse(data)
    assert isinstance(result, pp.Invalid), result
    assert reason in result.reason


@given(st.binary(max_size=300))
def test_any_bytes_never_raise(data: bytes) -> None:
    assert isinstance(pp.parse(data), pp.NeedMore | pp.Invalid | pp.Parsed)


@given(st.binary(max_size=120))
def test_any_bytes_after_a_valid_prefix_never_raise(tail: bytes) -> None:
    assert isinstance(pp.parse(SIG + tail), pp.NeedMore | pp.Invalid | pp.Parsed)


@given(
    st.ip_addresses(v=6),
    st.ip_addresses(v=6),
    st.integers(0, 65535),
    st.integers(0, 65535),
    st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,20}", fullmatch=True),
    st.from_regex(r"[a-z0-9]{1,15}", fullmatch=True),
)
def test_round_trip(
    src: object, dst: object, sport: int, dport: int, tenant: str, ifname: str
) -> None:
    h = pp.ProxyHeader(
        pp.Command.PROXY,
        pp.Family.INET6,
        pp.Transport.STREAM,
        str(src),
        sport,
        str(dst),
        dport,
        pp.cjb_tlvs(tenant, ifname),
    )
    raw = pp.encode(h)
    assert pp.parse(raw) == pp.Parsed(h, len(raw))


def test_front_header_carries_original_addresses_and_tenant() -> None:
    known = Known("globex", "tb", 8, "service", "fe80::c0a8:a", 51000)
    raw = header_for(known, ("fe80::c0a8:64%tb", 8081, 0, 8), source="link-local")
    parsed = pp.parse(raw)
    assert isinstance(parsed, pp.Parsed)
    h = parsed.header
    assert _addresses(h) == ("fe80::c0a8:a", 51000, "fe80::c0a8:64", 8081)
    assert (h.tenant, h.ifname) == ("globex", "tb")


def test_front_header_default_source_is_the_tenant_unique_address() -> None:
    local = ("fe80::c0a8:64%tb", 8081, 0, 8)
    headers = []
    for tenant in ("acme", "globex"):
        known = Known(tenant, "tb", 8, "service", "fe80::c0a8:a", 51000)
        parsed = pp.parse(header_for(known, local))
        assert isinstance(parsed, pp.Parsed)
        headers.append(parsed.header)
    # Same client address and port in both tenants, yet two different PROXY sources.
    assert headers[0].src_addr != headers[1].src_addr
    for tenant, h in zip(("acme", "globex"), headers, strict=True):
        assert h.src_addr == str(client_address(tenant, "192.168.0.10"))
        assert (h.src_port, h.dst_addr, h.tenant) == (51000, "fe80::c0a8:64", tenant)
