"""End to end: the `cjb xlat` offline tool on the generated sample and on raw-IP captures.

scapy is the independent dissector and checksum checker here: every packet the tool writes
is parsed back, its fields compared with what RFC 7915 and the ARP <-> NDP rules
(docs/translator.md) say, and its checksums recomputed by scapy and compared.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from scapy.layers.dns import DNS
from scapy.layers.inet import ICMP, IP, TCP, UDP, ICMPerror, IPerror, TCPerror, UDPerror
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPerror6,
    IPv6,
    IPv6ExtHdrFragment,
)
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet
from scapy.utils import RawPcapReader, RawPcapWriter, wrpcapng

from cjb.cli.xlat import xlat
from cjb.gateway.xlat import translator as translator_module
from cjb.gateway.xlat.offline import framing, runner
from cjb.gateway.xlat.offline.pcapio import LinkType
from cjb.gateway.xlat.offline.samples import (
    CLIENT_MAC,
    CLIENT_V4,
    CLIENT_V6,
    SERVICE_MAC,
    SERVICE_V4,
    SERVICE_V6,
    START_SEC,
    STEP_USEC,
    sample_frames,
)

TO_SERVICE_IN_SAMPLE = sum(1 for s in sample_frames() if s.frame[12:14] != b"\x86\xdd")
TO_LAN_IN_SAMPLE = len(sample_frames()) - TO_SERVICE_IN_SAMPLE
# Layers whose bytes are a quoted packet inside an ICMP error: truncated, so their checksums
# cannot be recomputed, and RFC 7915 only asks that they be translated, not fixed.
QUOTED_LAYERS = (IPerror, TCPerror, UDPerror, ICMPerror, IPerror6)


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Captured:
    linktype: int
    nano: bool
    records: list[tuple[int, int, bytes]]  # (sec, usec or nsec, bytes)


def run_cli(*args: str | Path) -> Run:
    result = CliRunner().invoke(xlat, [str(a) for a in args], catch_exceptions=False)
    return Run(result.exit_code, result.stdout, result.stderr)


def run_subprocess(*args: str | Path) -> Run:
    proc = subprocess.run(
        [sys.executable, "-m", "cjb.cli", "xlat", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def read_capture(path: Path) -> Captured:
    reader = RawPcapReader(str(path))
    try:
        records = [(m.sec, m.usec, bytes(d)) for d, m in reader]
        return Captured(reader.linktype, bool(reader.nano), records)
    finally:
        reader.close()


def dissect(data: bytes, linktype: int) -> Packet:
    if linktype == LinkType.ETHERNET:
        return Ether(data)
    return IPv6(data) if data[0] >> 4 == 6 else IP(data)


def assert_checksums_valid(pkt: Packet) -> None:
    """Delete every outer checksum, let scapy rebuild the packet, compare the bytes."""
    # A fragment's L4 checksum covers the whole datagram; the reassembly test checks it.
    fragment = IPv6ExtHdrFragment in pkt or (IP in pkt and (pkt[IP].flags.MF or pkt[IP].frag))
    rebuilt = pkt.copy()
    layer = rebuilt
    while layer and not isinstance(layer, QUOTED_LAYERS):
        if not fragment or isinstance(layer, IP):
            for name in ("chksum", "cksum"):
                if name in layer.fields:
                    delattr(layer, name)
        layer = layer.payload
    assert bytes(rebuilt) == bytes(pkt), f"checksum mismatch in {pkt.summary()}"


# ---------------------------------------------------------------- the sample, end to end


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xlat")


@pytest.fixture(scope="module")
def sample_pcap(workdir: Path) -> Path:
    path = workdir / "sample.pcap"
    run = run_subprocess("sample", path)
    assert run.exit_code == 0, run.stderr
    assert f"wrote {len(sample_frames())} frames" in run.stdout
    return path


@pytest.fixture(scope="module")
def translated(sample_pcap: Path, workdir: Path) -> tuple[dict[str, object], Captured]:
    out = workdir / "sample-out.pcap"
    run = run_cli(sample_pcap, out, "--json")
    assert run.exit_code == 0, run.stdout + run.stderr
    return json.loads(run.stdout), read_capture(out)


def packets(captured: Captured) -> list[Packet]:
    return [dissect(data, captured.linktype) for _, _, data in captured.records]


def only(pkts: list[Packet], what: str, pred: object) -> Packet:
    found = [p for p in pkts if pred(p)]  # type: ignore[operator]
    assert len(found) == 1, f"{what}: expected exactly one, got {[p.summary() for p in found]}"
    return found[0]


def test_sample_is_written_with_fixed_timestamps(sample_pcap: Path) -> None:
    captured = read_capture(sample_pcap)
    assert captured.linktype == LinkType.ETHERNET
    assert [data for _, _, data in captured.records] == [s.frame for s in sample_frames()]
    for i, (sec, usec, _) in enumerate(captured.records):
        assert sec * 1_000_000 + usec == START_SEC * 1_000_000 + i * STEP_USEC


def test_summary_accounts_for_every_input_frame(
    translated: tuple[dict[str, object], Captured],
) -> None:
    summary, out = translated
    assert summary["records_in"] == len(sample_frames())
    assert summary["frames_in"] == {"to-service": TO_SERVICE_IN_SAMPLE, "to-lan": TO_LAN_IN_SAMPLE}
    frames_out = summary["frames_out"]
    assert isinstance(frames_out, dict)
    assert sum(frames_out.values()) == summary["written_out"] == len(out.records)
    assert summary["core_failures"] == 0
    drops = summary["drops"]
    assert isinstance(drops, dict)
    assert drops.get("broadcast") == 1
    assert drops.get("too-big") == 1
    assert drops.get("truncated", 0) + drops.get("malformed", 0) == 1
    assert sum(drops.values()) == 3


def test_output_keeps_link_type_and_input_timestamps(
    translated: tuple[dict[str, object], Captured], sample_pcap: Path
) -> None:
    _, out = translated
    assert out.linktype == LinkType.ETHERNET
    in_times = [(sec, usec) for sec, usec, _ in read_capture(sample_pcap).records]
    out_times = [(sec, usec) for sec, usec, _ in out.records]
    assert set(out_times) <= set(in_times)
    assert out_times == sorted(out_times)


def test_every_output_checksum_verifies(translated: tuple[dict[str, object], Captured]) -> None:
    _, out = translated
    for pkt in packets(out):
        assert_checksums_valid(pkt)


def test_arp_request_becomes_solicitation_to_solicited_node_group(
    translated: tuple[dict[str, object], Captured],
) -> None:
    ns = only(packets(translated[1]), "NS", lambda p: ICMPv6ND_NS in p and p[IPv6].src == CLIENT_V6)
    solicited = ipaddress.IPv6Address(
        int(ipaddress.IPv6Address("ff02::1:ff00:0"))
        | (int(ipaddress.IPv6Address(SERVICE_V6)) & 0xFFFFFF)
    )
    assert ipaddress.IPv6Address(ns[IPv6].dst) == solicited  # RFC 4291 §2.7.1
    assert ns[Ether].dst == "33:33:" + ":".join(f"{b:02x}" for b in solicited.packed[-4:])
    assert ns[Ether].src == CLIENT_MAC
    assert ns[IPv6].hlim == 255  # RFC 4861 §7.1.1
    assert ns[ICMPv6ND_NS].tgt == SERVICE_V6
    assert ns[ICMPv6NDOptSrcLLAddr].lladdr == CLIENT_MAC


def test_neighbor_advertisement_becomes_arp_reply(
    translated: tuple[dict[str, object], Captured],
) -> None:
    arp = only(packets(translated[1]), "ARP reply", lambda p: ARP in p and p[ARP].op == 2)
    assert (arp[ARP].psrc, arp[ARP].hwsrc) == (SERVICE_V4, SERVICE_MAC)
    assert (arp[ARP].pdst, arp[ARP].hwdst) == (CLIENT_V4, CLIENT_MAC)
    assert (arp[Ether].src, arp[Ether].dst) == (SERVICE_MAC, CLIENT_MAC)


def test_solicitation_from_service_becomes_arp_request(
    translated: tuple[dict[str, object], Captured],
) -> None:
    arp = only(packets(translated[1]), "ARP request", lambda p: ARP in p and p[ARP].op == 1)
    assert (arp[ARP].psrc, arp[ARP].hwsrc, arp[ARP].pdst) == (SERVICE_V4, SERVICE_MAC, CLIENT_V4)
    assert arp[Ether].src == SERVICE_MAC
    assert arp[Ether].dst == "ff:ff:ff:ff:ff:ff"


def test_arp_reply_becomes_solicited_advertisement(
    translated: tuple[dict[str, object], Captured],
) -> None:
    na = only(packets(translated[1]), "NA", lambda p: ICMPv6ND_NA in p)
    assert (na[IPv6].src, na[IPv6].dst) == (CLIENT_V6, SERVICE_V6)
    assert na[IPv6].hlim == 255
    assert na[ICMPv6ND_NA].tgt == CLIENT_V6
    assert na[ICMPv6ND_NA].S == 1
    assert na[ICMPv6NDOptDstLLAddr].lladdr == CLIENT_MAC
    assert (na[Ether].src, na[Ether].dst) == (CLIENT_MAC, SERVICE_MAC)


def test_echo_both_ways_keeps_id_seq_payload_and_ttl(
    translated: tuple[dict[str, object], Captured],
) -> None:
    pkts = packets(translated[1])
    req = only(pkts, "echo request", lambda p: ICMPv6EchoRequest in p)
    assert (req[IPv6].src, req[IPv6].dst) == (CLIENT_V6, SERVICE_V6)
    assert (req[ICMPv6EchoRequest].id, req[ICMPv6EchoRequest].seq) == (0x1234, 1)
    assert req[ICMPv6EchoRequest].data == b"p" * 56
    # Part of one link: not decremented (docs/decisions/0002-no-ttl-decrement.md).
    assert req[IPv6].hlim == 64
    assert (req[Ether].src, req[Ether].dst) == (CLIENT_MAC, SERVICE_MAC)
    rep = only(pkts, "echo reply", lambda p: ICMP in p and p[ICMP].type == 0)
    assert (rep[IP].src, rep[IP].dst) == (SERVICE_V4, CLIENT_V4)
    assert (rep[ICMP].id, rep[ICMP].seq, rep[IP].ttl) == (0x1234, 1, 64)
    assert not any(ICMPv6EchoReply in p for p in pkts)


def test_tcp_handshake_and_data_cross_both_ways(
    translated: tuple[dict[str, object], Captured],
) -> None:
    pkts = packets(translated[1])
    v6 = [p for p in pkts if TCP in p and IPv6 in p]
    v4 = [p for p in pkts if TCP in p and IP in p and ICMP not in p]
    assert [str(p[TCP].flags) for p in v6] == ["S", "A", "PA"]
    assert all((p[IPv6].src, p[IPv6].dst) == (CLIENT_V6, SERVICE_V6) for p in v6)
    assert v6[2][TCP].payload.load.startswith(b"GET / HTTP/1.1")
    assert [str(p[TCP].flags) for p in v4] == ["SA", "PA"]
    assert all((p[IP].src, p[IP].dst) == (SERVICE_V4, CLIENT_V4) for p in v4)
    assert v4[1][TCP].payload.load.endswith(b"hello tenant")
    # RFC 7915 §5.1: DF is 0 when the translated IPv4 packet is at most 1260 bytes.
    assert all(not p[IP].flags.DF for p in v4)


def test_udp_zero_checksum_is_computed_by_default(
    translated: tuple[dict[str, object], Captured],
) -> None:
    udp = only(
        packets(translated[1]),
        "UDP 40001",
        lambda p: UDP in p and IPv6 in p and p[UDP].sport == 40001,
    )
    assert udp[UDP].chksum != 0  # RFC 7915 §4.5; validity is checked by the checksum test
    assert udp[UDP].payload.load == b"no checksum"


def test_udp_zero_checksum_drop_policy(sample_pcap: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.pcap"
    run = run_cli(sample_pcap, out, "--udp-zero-checksum", "drop", "--json")
    assert run.exit_code == 0, run.stdout
    assert json.loads(run.stdout)["drops"]["udp-zero-checksum"] == 1
    pkts = packets(read_capture(out))
    assert not any(UDP in p and p[UDP].sport == 40001 for p in pkts)
    assert any(UDP in p and p[UDP].sport == 40000 for p in pkts)


def test_fragment_pair_reassembles_to_the_original_datagram(
    translated: tuple[dict[str, object], Captured],
) -> None:
    frags = [p for p in packets(translated[1]) if IPv6ExtHdrFragment in p]
    assert frags, "no IPv6 fragments in the output"
    assert {p[IPv6ExtHdrFragment].id for p in frags} == {0x4242}  # 16 -> 32-bit ID, §4.1
    for p in frags:
        assert len(p[IPv6]) <= 1520  # the service MTU
        assert (p[IPv6].src, p[IPv6].dst) == (CLIENT_V6, SERVICE_V6)
    pieces = sorted(
        (p[IPv6ExtHdrFragment].offset * 8, bytes(p[IPv6ExtHdrFragment].payload)) for p in frags
    )
    data = b""
    for offset, chunk in pieces:
        assert offset == len(data), "gap or overlap between fragments"
        data += chunk
    assert [p[IPv6ExtHdrFragment].m for p in frags].count(0) == 1
    udp = UDP(data)
    assert (udp.sport, udp.dport, udp.len) == (40002, 5001, 1808)
    assert bytes(udp.payload) == b"F" * 1800
    # The UDP checksum over the reassembled datagram, with the IPv6 pseudo-header.
    rebuilt = IPv6(src=CLIENT_V6, dst=SERVICE_V6) / UDP(data)
    del rebuilt[UDP].chksum
    assert IPv6(bytes(rebuilt))[UDP].chksum == udp.chksum


def test_oversized_df_packet_gets_fragmentation_needed_back(
    translated: tuple[dict[str, object], Captured],
) -> None:
    pkts = packets(translated[1])
    err = only(pkts, "frag needed", lambda p: ICMP in p and p[ICMP].type == 3)
    assert err[ICMP].code == 4
    assert err[ICMP].nexthopmtu == 1500  # service MTU 1520 - 20 (RFC 7915 §4.1)
    assert err[IP].dst == CLIENT_V4
    assert err[Ether].dst == CLIENT_MAC
    quoted = err[IPerror]
    assert (quoted.src, quoted.dst, quoted.len) == (CLIENT_V4, SERVICE_V4, 2000)
    assert not any(IPv6 in p and len(p[IPv6]) > 1520 for p in pkts)


def test_mdns_goes_to_its_ipv6_group(translated: tuple[dict[str, object], Captured]) -> None:
    mdns = only(packets(translated[1]), "mDNS", lambda p: IPv6 in p and p[IPv6].dst == "ff02::fb")
    assert mdns[Ether].dst == "33:33:00:00:00:fb"
    assert mdns[IPv6].hlim == 255
    assert mdns[UDP].dport == 5353
    assert mdns[DNS].qd[0].qname == b"_ipp._tcp.local."


def test_errors_to_splits_frames_going_back(sample_pcap: Path, tmp_path: Path) -> None:
    out, back = tmp_path / "out.pcap", tmp_path / "back.pcap"
    run = run_cli(sample_pcap, out, "--errors-to", back, "--json")
    assert run.exit_code == 0, run.stdout
    summary = json.loads(run.stdout)
    back_pkts = packets(read_capture(back))
    assert len(back_pkts) == summary["written_errors"] == 1
    assert back_pkts[0][ICMP].type == 3
    assert not any(ICMP in p and p[ICMP].type == 3 for p in packets(read_capture(out)))


def test_forced_direction_drops_the_other_family(sample_pcap: Path, tmp_path: Path) -> None:
    run = run_cli(sample_pcap, tmp_path / "out.pcap", "--direction", "to-service", "--json")
    assert run.exit_code == 0, run.stdout
    summary = json.loads(run.stdout)
    assert summary["frames_in"] == {"to-service": len(sample_frames()), "to-lan": 0}
    assert summary["drops"]["native-ipv6-on-lan"] == TO_LAN_IN_SAMPLE


def test_table_summary_is_readable(sample_pcap: Path, tmp_path: Path) -> None:
    run = run_subprocess(sample_pcap, tmp_path / "out.pcap")
    assert run.exit_code == 0, run.stderr
    lines = {
        line.split()[0]: line.split()[1:] for line in run.stdout.splitlines()[1:] if line.strip()
    }
    assert lines["in"][0] == str(len(sample_frames()))
    assert lines["to-service"][0] == str(TO_SERVICE_IN_SAMPLE)
    assert lines["dropped"] == ["3"]
    assert lines["broadcast"] == ["1"]
    assert lines["too-big"] == ["1"]


# ---------------------------------------------------------------- raw IP captures


def write_raw(path: Path, linktype: int, pkts: Sequence[Packet], *, nano: bool = False) -> None:
    with RawPcapWriter(str(path), linktype=linktype, nano=nano) as writer:
        writer.write_header(None)
        for i, pkt in enumerate(pkts):
            writer.write_packet(
                bytes(pkt), sec=START_SEC, usec=i * 7 + (123_456_000 if nano else 0)
            )


V4_PACKETS = [
    IP(src=CLIENT_V4, dst=SERVICE_V4) / UDP(sport=1111, dport=2222) / b"raw udp",
    IP(src=CLIENT_V4, dst=SERVICE_V4, flags="DF") / TCP(sport=3333, dport=80, flags="S", seq=5),
    IP(src=CLIENT_V4, dst=SERVICE_V4) / ICMP(type=8, id=7, seq=9) / b"ping",
    IP(src=CLIENT_V4, dst="224.0.0.251", ttl=255) / UDP(sport=5353, dport=5353) / b"mdns",
]
V6_PACKETS = [
    IPv6(src=SERVICE_V6, dst=CLIENT_V6) / UDP(sport=2222, dport=1111) / b"raw udp",
    IPv6(src=SERVICE_V6, dst=CLIENT_V6) / TCP(sport=80, dport=3333, flags="SA", seq=1, ack=6),
    IPv6(src=SERVICE_V6, dst=CLIENT_V6) / ICMPv6EchoReply(id=7, seq=9, data=b"ping"),
]


def test_raw_ipv4_capture_translates_into_raw_ip(tmp_path: Path) -> None:
    src, out = tmp_path / "in.pcap", tmp_path / "out.pcap"
    write_raw(src, 228, V4_PACKETS)
    run = run_cli(src, out, "--json")
    assert run.exit_code == 0, run.stdout
    summary = json.loads(run.stdout)
    assert summary["input_linktype"] == 228
    assert summary["output_linktype"] == 101  # 228 cannot hold IPv6
    captured = read_capture(out)
    assert captured.linktype == 101
    pkts = packets(captured)
    assert [type(p) for p in pkts] == [IPv6] * 4
    assert [p[IPv6].dst for p in pkts] == [SERVICE_V6] * 3 + ["ff02::fb"]
    assert all(p[IPv6].src == CLIENT_V6 for p in pkts)
    assert pkts[2][ICMPv6EchoRequest].data == b"ping"
    for pkt in pkts:
        assert_checksums_valid(pkt)


def test_raw_ipv6_capture_translates_into_raw_ip(tmp_path: Path) -> None:
    src, out = tmp_path / "in.pcap", tmp_path / "out.pcap"
    write_raw(src, 229, V6_PACKETS)
    run = run_cli(src, out, "--json")
    assert run.exit_code == 0, run.stdout
    captured = read_capture(out)
    assert captured.linktype == 101
    pkts = packets(captured)
    assert [type(p) for p in pkts] == [IP] * 3
    assert all((p.src, p.dst) == (SERVICE_V4, CLIENT_V4) for p in pkts)
    assert pkts[0][UDP].payload.load == b"raw udp"
    assert (pkts[2][ICMP].type, pkts[2][ICMP].id, pkts[2][ICMP].seq) == (0, 7, 9)
    for pkt in pkts:
        assert_checksums_valid(pkt)


def test_raw_ip_101_mixed_keeps_order_and_nanosecond_timestamps(tmp_path: Path) -> None:
    src, out = tmp_path / "in.pcap", tmp_path / "out.pcap"
    mixed = [V4_PACKETS[0], V6_PACKETS[0], V4_PACKETS[1], V6_PACKETS[1]]
    write_raw(src, 101, mixed, nano=True)
    run = run_cli(src, out, "--json")
    assert run.exit_code == 0, run.stdout
    captured, original = read_capture(out), read_capture(src)
    assert (captured.linktype, captured.nano) == (101, True)
    assert [(s, f) for s, f, _ in captured.records] == [(s, f) for s, f, _ in original.records]
    assert [type(p) for p in packets(captured)] == [IPv6, IP, IPv6, IP]


def test_ndp_in_raw_ipv6_is_counted_as_unrepresentable(tmp_path: Path) -> None:
    src, out = tmp_path / "in.pcap", tmp_path / "out.pcap"
    ns = (
        IPv6(src=SERVICE_V6, dst="ff02::1:ffa8:a", hlim=255)
        / ICMPv6ND_NS(tgt=CLIENT_V6)
        / ICMPv6NDOptSrcLLAddr(lladdr=SERVICE_MAC)
    )
    write_raw(src, 229, [ns, V6_PACKETS[0]])
    run = run_cli(src, out, "--json")
    assert run.exit_code == 0, run.stdout
    summary = json.loads(run.stdout)
    assert summary["unrepresentable"] == 1  # the ARP request the NS became
    assert [type(p) for p in packets(read_capture(out))] == [IP]


def test_synthetic_ethernet_macs() -> None:
    v4 = bytes(V4_PACKETS[3])
    frame = framing.to_ethernet(v4, LinkType.IPV4)
    assert frame[:6] == bytes.fromhex("01005e0000fb")  # RFC 1112 §6.4
    assert frame[6:12] == bytes.fromhex("0200c0a8000a")
    assert frame[12:14] == b"\x08\x00"
    v6 = bytes(V6_PACKETS[0])
    frame6 = framing.to_ethernet(v6, LinkType.RAW)
    assert frame6[:12] == bytes.fromhex("0200c0a8000a0200c0a80064")
    assert frame6[12:14] == b"\x86\xdd"
    assert framing.from_ethernet(frame6, LinkType.RAW) == v6
    arp = bytes(Ether() / ARP())
    assert framing.from_ethernet(arp, LinkType.RAW) is None
    assert framing.from_ethernet(arp, LinkType.ETHERNET) == arp


# ---------------------------------------------------------------- errors and edges


def test_missing_input_is_a_clear_error(tmp_path: Path) -> None:
    run = run_subprocess(tmp_path / "nope.pcap", tmp_path / "out.pcap")
    assert run.exit_code == 2
    assert "does not exist" in run.stderr
    assert "Traceback" not in run.stderr


def test_not_a_pcap_is_a_clear_error(tmp_path: Path) -> None:
    src = tmp_path / "notes.txt"
    src.write_text("hello, not a capture\n")
    run = run_subprocess(src, tmp_path / "out.pcap")
    assert run.exit_code == 1
    assert "not a pcap file" in run.stderr
    assert "Traceback" not in run.stderr


def test_pcapng_is_refused_with_a_hint(tmp_path: Path) -> None:
    src = tmp_path / "in.pcapng"
    wrpcapng(str(src), [Ether() / IP()])
    run = run_cli(src, tmp_path / "out.pcap")
    assert run.exit_code == 1
    assert "pcapng is not supported" in run.stderr


def test_unsupported_link_type_is_named(tmp_path: Path) -> None:
    src = tmp_path / "sll.pcap"
    write_raw(src, 113, [IP()])  # Linux cooked capture
    run = run_subprocess(src, tmp_path / "out.pcap")
    assert run.exit_code == 1
    assert "unsupported link type 113" in run.stderr
    for supported in ("1 (ETHERNET)", "101 (RAW)", "228 (IPV4)", "229 (IPV6)"):
        assert supported in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--direction", "sideways"], "Invalid value for '--direction'"),
        (["--lan-mtu", "big"], "Invalid value for '--lan-mtu'"),
        (["--lowest-ipv6-mtu", "1000"], "--lowest-ipv6-mtu=1000: must be between 1280"),
        (["--service-mtu", "9999999"], "--service-mtu=9999999"),
        (["--udp-zero-checksum", "ignore"], "Invalid value for '--udp-zero-checksum'"),
    ],
)
def test_bad_options_are_usage_errors(
    sample_pcap: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    run = run_cli(sample_pcap, tmp_path / "out.pcap", *args)
    assert run.exit_code == 2
    assert message in run.stderr


def test_unwritable_output_is_a_clear_error(sample_pcap: Path, tmp_path: Path) -> None:
    run = run_subprocess(sample_pcap, tmp_path / "no-such-dir" / "out.pcap")
    assert run.exit_code == 1
    assert "cannot write" in run.stderr
    assert "Traceback" not in run.stderr


def test_output_must_not_overwrite_input(sample_pcap: Path, workdir: Path) -> None:
    before = sample_pcap.read_bytes()
    run = run_cli(sample_pcap, sample_pcap)
    assert run.exit_code == 1
    assert "must differ" in run.stderr
    assert sample_pcap.read_bytes() == before


def test_empty_capture_gives_empty_valid_output(tmp_path: Path) -> None:
    src, out = tmp_path / "empty.pcap", tmp_path / "out.pcap"
    write_raw(src, 1, [])
    run = run_cli(src, out, "--json")
    assert run.exit_code == 0, run.stdout
    assert json.loads(run.stdout)["records_in"] == 0
    assert read_capture(out) == Captured(1, False, [])


def test_core_exception_is_reported_not_hidden(
    sample_pcap: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault injected inside the core (below Translator.translate, which catches it and
    counts an INTERNAL_ERROR drop) still reaches the operator: exit status 3, the
    exception's type and message, and the summary."""

    def boom(*args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(translator_module, "ipv4_to_service_fast", boom)
    monkeypatch.setattr(translator_module, "ipv6_to_lan_fast", boom)
    monkeypatch.setattr(translator_module.Translator, "_dispatch", boom)
    run = run_cli(sample_pcap, tmp_path / "out.pcap", "--json")
    assert run.exit_code == 3
    assert "frame #1: translator raised RuntimeError: bug" in run.stderr
    assert f"raised on {len(sample_frames())} frame(s)" in run.stderr
    summary = json.loads(run.stdout)  # the summary still prints
    assert summary["core_failures"] == len(sample_frames())
    assert summary["drops"]["internal-error"] == len(sample_frames())


def test_one_failing_frame_is_reported_with_its_number(
    sample_pcap: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = translator_module.Translator._dispatch
    calls = []

    def fail_third(self: object, frame: bytes, direction: object) -> object:
        calls.append(frame)
        if len(calls) == 3:
            raise KeyError("no such entry")
        return real(self, frame, direction)  # type: ignore[arg-type]

    monkeypatch.setattr(translator_module.Translator, "_dispatch", fail_third)
    monkeypatch.setattr(translator_module, "ipv4_to_service_fast", lambda *a: None)
    monkeypatch.setattr(translator_module, "ipv6_to_lan_fast", lambda *a: None)
    run = run_cli(sample_pcap, tmp_path / "out.pcap")
    assert run.exit_code == 3
    assert "frame #3: translator raised KeyError: 'no such entry'" in run.stderr
    assert "raised on 1 frame(s)" in run.stderr


def test_progress_is_reported_every_n_frames(
    sample_pcap: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "PROGRESS_EVERY", 5)
    seen: list[int] = []
    summary = runner.translate_capture(sample_pcap, tmp_path / "out.pcap", progress=seen.append)
    assert seen == [5, 10, 15]
    assert summary.records_in == len(sample_frames())


def test_help_shows_the_stable_form_and_the_sample_command() -> None:
    run = run_subprocess("--help")
    assert run.exit_code == 0
    assert "xlat [OPTIONS] IN.pcap OUT.pcap" in run.stdout
    assert "sample OUT.pcap" in run.stdout
    assert "--udp-zero-checksum [compute|drop]" in run.stdout
