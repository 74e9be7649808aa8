# ruff: noqa: E501  (one vector per statement: the RFC derivation reads as a table)
"""`cjb gateway selftest` and the vectors it ships (gateway/xlat/vectors.py).

The vectors are derived here again, independently: input and expected output built with
scapy from the RFC field rules, compared with the shipped hex. Then the command runs: as
root both columns (the installed BPF object in a scratch namespace, removed afterwards),
without root the Python column and the reason the kernel's is empty.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from cjb.cli.main import main as cli
from cjb.gateway.dataplane import selftest
from cjb.gateway.xlat.result import DropReason, Side
from cjb.gateway.xlat.vectors import LARGE, SMALL, VECTORS, Vector

LAN_MAC, SVC_MAC = "02:00:00:00:00:0a", "02:00:00:00:00:64"
LAN, SVC, LAN6, SVC6 = "192.168.0.10", "192.168.0.100", "fe80::c0a8:a", "fe80::c0a8:64"


def lan(l3: Packet) -> bytes:
    return bytes(Ether(dst=SVC_MAC, src=LAN_MAC) / l3)


def svc(l3: Packet) -> bytes:
    return bytes(Ether(dst=LAN_MAC, src=SVC_MAC) / l3)


def _tcp4() -> Packet:
    return TCP(sport=40000, dport=80, seq=1, ack=2, flags="PA") / SMALL


def _tcp6() -> Packet:
    return TCP(sport=80, dport=40000, seq=5, ack=6, flags="A") / LARGE


# name -> (input, expected frames per port, or the drop). §4.1: traffic class = TOS, flow
# label 0, hop limit = TTL (copied: a link, not a router); §5.1: DF set above 1260 bytes with
# ID 0 (RFC 6864 §4.1); §5.1.1 / RFC 6946: an atomic fragment's ID is kept, DF clear.
DERIVED: dict[str, tuple[bytes, tuple[tuple[Side, bytes], ...] | DropReason]] = {
    "ipv4-tcp": (
        lan(IP(src=LAN, dst=SVC, tos=0x10, ttl=64, id=0x1234, flags="DF") / _tcp4()),
        ((Side.SERVICE, lan(IPv6(src=LAN6, dst=SVC6, tc=0x10, fl=0, hlim=64) / _tcp4())),),
    ),
    "ipv4-udp": (
        lan(IP(src=LAN, dst=SVC, ttl=17, id=7, flags="DF") / UDP(sport=40000, dport=9999) / SMALL),
        ((Side.SERVICE, lan(IPv6(src=LAN6, dst=SVC6, hlim=17) / UDP(sport=40000, dport=9999) / SMALL)),),
    ),
    "icmpv4-echo-request": (
        lan(IP(src=LAN, dst=SVC, ttl=64, id=9, flags="DF") / ICMP(type=8, id=7, seq=1) / SMALL),
        ((Side.SERVICE, lan(IPv6(src=LAN6, dst=SVC6, hlim=64) / ICMPv6EchoRequest(id=7, seq=1) / SMALL)),),
    ),
    "ipv4-udp-zero-checksum": (
        lan(IP(src=LAN, dst=SVC, ttl=64, id=3, flags="DF") / UDP(sport=40000, dport=9999, chksum=0) / SMALL),
        ((Side.SERVICE, lan(IPv6(src=LAN6, dst=SVC6, hlim=64) / UDP(sport=40000, dport=9999) / SMALL)),),
    ),
    "ipv4-to-loopback": (
        lan(IP(src=LAN, dst="127.0.0.1", ttl=64, flags="DF") / UDP(sport=1, dport=2) / SMALL),
        DropReason.ADDRESS_NOT_TRANSLATABLE,
    ),
    "ipv6-tcp": (
        svc(IPv6(src=SVC6, dst=LAN6, tc=0x28, hlim=63) / _tcp6()),
        ((Side.LAN, svc(IP(src=SVC, dst=LAN, tos=0x28, ttl=63, id=0, flags="DF") / _tcp6())),),
    ),
    "ipv6-udp": (
        svc(IPv6(src=SVC6, dst=LAN6, hlim=64) / UDP(sport=53, dport=40000) / LARGE),
        ((Side.LAN, svc(IP(src=SVC, dst=LAN, ttl=64, id=0, flags="DF") / UDP(sport=53, dport=40000) / LARGE)),),
    ),
    "icmpv6-echo-reply": (
        svc(IPv6(src=SVC6, dst=LAN6, hlim=64) / ICMPv6EchoReply(id=7, seq=1) / LARGE),
        ((Side.LAN, svc(IP(src=SVC, dst=LAN, ttl=64, id=0, flags="DF") / ICMP(type=0, id=7, seq=1) / LARGE)),),
    ),
    "ipv6-unknown-next-header": (
        svc(IPv6(src=SVC6, dst=LAN6, hlim=64, nh=253) / Raw(LARGE)),
        ((Side.LAN, svc(IP(src=SVC, dst=LAN, ttl=64, id=0, flags="DF", proto=253) / Raw(LARGE))),),
    ),
    "ipv6-atomic-fragment-icmp": (
        svc(IPv6(src=SVC6, dst=LAN6, hlim=64) / IPv6ExtHdrFragment(id=0x42, m=0, offset=0) / ICMPv6EchoRequest(id=7, seq=1) / LARGE),
        ((Side.LAN, svc(IP(src=SVC, dst=LAN, ttl=64, id=0x42, flags=0) / ICMP(type=8, id=7, seq=1) / LARGE)),),
    ),
}  # fmt: skip


def test_every_shipped_vector_is_derived_here() -> None:
    assert [v.name for v in VECTORS] == list(DERIVED)


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: v.name)
def test_shipped_vector_equals_the_rfc_derivation(v: Vector) -> None:
    frame, expect = DERIVED[v.name]
    assert v.frame == frame
    if isinstance(expect, DropReason):
        assert v.expected_drop is expect and v.expected_frames == ()
    else:
        assert v.expected_frames == expect


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: v.name)
def test_python_translator_passes_the_vector(v: Vector) -> None:
    assert selftest.run_python(v) == selftest.Outcome(True, "pass")


def test_a_wrong_translation_fails_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    v = VECTORS[0]
    wrong_header = v.expect[0][1][:-4] + "ffff"  # TCP urgent pointer  # type: ignore[index]
    broken = Vector(
        v.name, v.rfc, v.direction, v.header_hex, v.payload, ((Side.SERVICE, wrong_header),)
    )
    monkeypatch.setattr(selftest, "VECTORS", (broken, *VECTORS[1:]))
    result = CliRunner().invoke(cli, ["gateway", "selftest", "--python-only"])
    assert result.exit_code == 1, result.output
    assert "ipv4-tcp" in result.output and "FAIL: differs at byte" in result.output
    assert "1 FAILED" in result.output


def _run_command(*, as_nobody: bool) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "cjb.cli", "gateway", "selftest"]
    if as_nobody:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("setpriv (util-linux) missing: cannot drop root for the non-root run")
        argv = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def _table(out: str) -> dict[str, list[str]]:
    rows = {}
    for line in out.splitlines()[1:]:
        name = line.split(" ", 1)[0]
        if name in DERIVED:
            rows[name] = line.split("  ")
    return rows


def test_command_without_root_runs_the_python_column() -> None:
    proc = _run_command(as_nobody=os.geteuid() == 0)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "kernel path not run: needs root" in proc.stdout
    assert "10 vectors: all passed" in proc.stdout
    table = _table(proc.stdout)
    assert set(table) == set(DERIVED)
    for name, cells in table.items():
        assert [c.strip() for c in cells if c.strip()][-2:] == ["pass", "n/a"], name


@pytest.mark.root
def test_command_as_root_runs_both_columns_and_leaves_no_namespace() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a network namespace, veths and tc BPF programs")
    from cjb.gateway.dataplane.bpf import FastPathError, build_object

    try:
        build_object()
    except FastPathError as exc:
        pytest.skip(str(exc))
    proc = _run_command(as_nobody=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "kernel path not run" not in proc.stdout
    by_name = {v.name: v for v in VECTORS}
    for name, cells in _table(proc.stdout).items():
        python, kernel = [c.strip() for c in cells if c.strip()][-2:]
        assert python == "pass", name
        # The common case must be translated by the kernel itself; the rest left to Python.
        assert kernel == ("pass" if by_name[name].fast else "slow path"), name
    assert not [n for n in os.listdir("/run/netns") if n.startswith("cjbst")]
    assert Path("/run/netns").is_dir()


@pytest.mark.root
def test_scratch_namespace_is_removed_when_a_run_fails_midway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a network namespace, veths and tc BPF programs")
    seen: list[str] = []

    def boom(bed: object, v: Vector) -> selftest.Outcome:
        seen.extend(n for n in os.listdir("/run/netns") if n.startswith("cjbst"))
        raise RuntimeError("interrupted")

    from cjb.gateway.dataplane.bpf import FastPathError, build_object

    try:
        build_object()
    except FastPathError as exc:
        pytest.skip(str(exc))
    monkeypatch.setattr(selftest._Bed, "run", boom)
    with pytest.raises(RuntimeError, match="interrupted"):
        selftest.run_selftest()
    assert seen, "the scratch namespace was never there"
    assert not [n for n in os.listdir("/run/netns") if n.startswith("cjbst")]
