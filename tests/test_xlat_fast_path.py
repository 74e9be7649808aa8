"""The fast path must be byte-identical to the full reference path wherever it applies."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from cjb.common.packet.checksum import internet_checksum
from cjb.gateway.xlat import Direction, Translator, XlatConfig

unicast_v4 = st.tuples(
    st.integers(1, 223).filter(lambda a: a != 127),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
).map(bytes)
macs = st.binary(min_size=6, max_size=6)


def ipv4_frame(
    src: bytes,
    dst: bytes,
    proto: int,
    tos: int,
    ttl: int,
    df: bool,
    l4: bytes,
    dmac: bytes,
    smac: bytes,
) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        tos,
        20 + len(l4),
        0x1234,
        0x4000 if df else 0,
        ttl,
        proto,
        0,
        src,
        dst,
    )
    header = header[:10] + internet_checksum(header).to_bytes(2, "big") + header[12:]
    return dmac + smac + b"\x08\x00" + header + l4


def ipv6_frame(
    src: bytes, dst: bytes, nh: int, tc: int, hlim: int, l4: bytes, dmac: bytes, smac: bytes
) -> bytes:
    fe80 = b"\xfe\x80" + bytes(10)
    header = struct.pack(
        "!IHBB16s16s", 0x60000000 | tc << 20 | 0x12345, len(l4), nh, hlim, fe80 + src, fe80 + dst
    )
    return dmac + smac + b"\x86\xdd" + header + l4


@st.composite
def transport(draw: st.DrawFn) -> tuple[int, bytes]:
    proto = draw(st.sampled_from([6, 17]))
    size = draw(st.integers(20 if proto == 6 else 8, 1600))
    return proto, draw(st.binary(min_size=size, max_size=size))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    unicast_v4,
    unicast_v4,
    transport(),
    st.integers(0, 255),
    st.integers(0, 255),
    st.booleans(),
    macs,
    macs,
    st.binary(max_size=4),
)
def test_ipv4_fast_path_equals_full_path(src, dst, tp, tos, ttl, df, dmac, smac, padding) -> None:
    proto, l4 = tp
    frame = ipv4_frame(src, dst, proto, tos, ttl, df, l4, dmac, smac) + padding
    fast, full = Translator(XlatConfig()), Translator(XlatConfig(), fast_path=False)
    assert fast.translate(frame, Direction.TO_SERVICE) == full.translate(
        frame, Direction.TO_SERVICE
    )


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    unicast_v4,
    unicast_v4,
    transport(),
    st.integers(0, 255),
    st.integers(0, 255),
    macs,
    macs,
    st.binary(max_size=4),
)
def test_ipv6_fast_path_equals_full_path(src, dst, tp, tc, hlim, dmac, smac, padding) -> None:
    nh, l4 = tp
    frame = ipv6_frame(src, dst, nh, tc, hlim, l4, dmac, smac) + padding
    fast, full = Translator(XlatConfig()), Translator(XlatConfig(), fast_path=False)
    assert fast.translate(frame, Direction.TO_LAN) == full.translate(frame, Direction.TO_LAN)
