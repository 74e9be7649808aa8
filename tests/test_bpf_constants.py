"""The kernel fast path (xlat.bpf.c) and the Python translator encode the same rules twice:
every #define, the config struct and the counter enum are read out of the C source here and
compared with the Python constant of the same meaning. No compiler needed."""

from __future__ import annotations

import re

import pytest

from cjb.common.packet.ipv4 import PROTO_ICMP, PROTO_TCP, PROTO_UDP
from cjb.common.packet.ipv6 import NH_ICMPV6
from cjb.common.packet.transport import CHECKSUM_OFFSET
from cjb.gateway.dataplane.bpf import fastpath
from cjb.gateway.dataplane.bpf.counters import COUNTER_NAMES
from cjb.gateway.xlat import fast_path
from cjb.gateway.xlat.addressing import FE80_96
from cjb.gateway.xlat.alg.udp import MDNS_PORT, SSDP_PORT
from cjb.gateway.xlat.icmp_map import DF_THRESHOLD

SOURCE = fastpath.SOURCE.read_text()

# Every #define in the C source, and the Python value it must equal.
EXPECTED = {
    "MOD": fast_path.ONES_MOD,
    "IPPROTO_ICMP": PROTO_ICMP,
    "IPPROTO_TCP": PROTO_TCP,
    "IPPROTO_UDP": PROTO_UDP,
    "IPPROTO_ICMPV6": NH_ICMPV6,
    "DF_THRESHOLD": DF_THRESHOLD,
    "MDNS_PORT": MDNS_PORT,
    "SSDP_PORT": SSDP_PORT,
    "V4_L4_OFF": fast_path.V4_L4_OFF,
    "V6_L4_OFF": fast_path.V6_L4_OFF,
    "TCP_CSUM_OFF": CHECKSUM_OFFSET[PROTO_TCP],
    "UDP_CSUM_OFF": CHECKSUM_OFFSET[PROTO_UDP],
    "ICMP_CSUM_OFF": 2,  # RFC 792 / RFC 4443 §2.1: type, code, checksum
    "FE80_0": FE80_96[0],
    "FE80_1": FE80_96[1],
    "ETH_P_IPV6_HI": fast_path.ETH_IPV6[0],
    "ETH_P_IPV6_LO": fast_path.ETH_IPV6[1],
}


def _defines(source: str) -> dict[str, int]:
    found = {}
    for name, value in re.findall(r"^#define\s+(\w+)\s+(0x[0-9A-Fa-f]+|\d+)\b", source, re.M):
        found[name] = int(value, 0)
    return found


def test_every_define_is_compared() -> None:
    # A #define added to the C source without a Python counterpart fails here.
    assert set(_defines(SOURCE)) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_define_matches_python(name: str) -> None:
    assert _defines(SOURCE)[name] == EXPECTED[name], f"xlat.bpf.c #define {name}"


def test_fe80_prefix_is_the_pythons() -> None:
    # The C checks octets 2..11 for zero in a loop; the Python prefix must be that shape.
    assert bytes((EXPECTED["FE80_0"], EXPECTED["FE80_1"])) + bytes(10) == FE80_96
    assert "for (int i = 2; i < 12; i++)" in SOURCE


_C_TYPES = {"__u32": "I", "__u8": "B"}


def _struct_format(source: str, name: str) -> str:
    body = re.search(rf"struct {name} {{(.*?)}};", source, re.S)
    assert body, f"struct {name} not found in xlat.bpf.c"
    fmt = ""
    for ctype, _field, dims in re.findall(r"(__u\d+)\s+(\w+)((?:\[\d+\])*);", body.group(1)):
        count = 1
        for d in re.findall(r"\[(\d+)\]", dims):
            count *= int(d)
        if dims and ctype == "__u8":
            fmt += f"{count}s"
        else:
            fmt += _C_TYPES[ctype] * count
    return fmt


def test_config_struct_matches_the_loader() -> None:
    # The loader packs struct cjb_cfg with fastpath._CFG ("=": native order, no padding; the
    # C struct has only __u32 fields followed by bytes, so it has no padding either).
    expanded = re.sub(r"(\d+)I", lambda m: "I" * int(m.group(1)), fastpath._CFG.format)
    assert "=" + _struct_format(SOURCE, "cjb_cfg") == expanded


def test_counter_enum_matches_the_names() -> None:
    body = re.search(r"enum {(.*?)};", SOURCE, re.S)
    assert body
    slots = [s.strip() for s in body.group(1).split(",") if s.strip()]
    assert slots[-1] == "C_COUNT"
    assert [s.removeprefix("C_").lower() for s in slots[:-1]] == [
        n.replace("slow_path_", "slow_") for n in COUNTER_NAMES
    ]
