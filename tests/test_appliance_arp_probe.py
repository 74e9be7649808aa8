"""RFC 5227 §2.1.1 prober: exact probe frames and timing (sans-IO), conflict handling, any
bytes never raise; and one real run between two namespaces where a host already holds the
preferred address.

Real topology (namespaces cjbBa<run>-probe and cjbBa<run>-host):

    probe ns: p0 (the prober's AF_PACKET socket) ──veth── h0 (host ns): 192.168.77.100/24
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cjb.appliance.arp_probe import Prober, ProbeState, Timing, candidates
from cjb.common.packet.arp import OP_REPLY, OP_REQUEST, ArpPacket, build_arp
from cjb.common.packet.ethernet import ETHERTYPE_ARP, build_ethernet

MAC = bytes.fromhex("020000000001")
OTHER = bytes.fromhex("020000000099")
NET = ipaddress.IPv4Network("192.168.0.0/24")
A100, A101, A102 = (ipaddress.IPv4Address(f"192.168.0.{n}") for n in (100, 101, 102))


def arp_frame(op: int, sender_mac: bytes, sender_ip: str, target_ip: str) -> bytes:
    packet = ArpPacket(
        op,
        sender_mac,
        ipaddress.IPv4Address(sender_ip).packed,
        b"\x00" * 6,
        ipaddress.IPv4Address(target_ip).packed,
    )
    dst = b"\xff" * 6 if op == OP_REQUEST else MAC
    return build_ethernet(dst, sender_mac, ETHERTYPE_ARP) + build_arp(packet)


def prober(cands: list[ipaddress.IPv4Address], timing: Timing | None = None) -> Prober:
    p = Prober(MAC, cands, rng=lambda: 0.5, timing=timing or Timing())
    p.start(0.0)
    return p


def test_probe_schedule_and_exact_frames_when_nobody_answers() -> None:
    p = prober([A100, A101])
    expected_probe = bytes.fromhex(
        "ffffffffffff" "020000000001" "0806"  # broadcast, from us, ARP
        "0001" "0800" "06" "04" "0001"  # Ethernet/IPv4, request
        "020000000001" "00000000"  # sender: our MAC, IP 0.0.0.0 (a probe, §2.1.1)
        "000000000000" "c0a80064"  # target: MAC zero, 192.168.0.100
    )  # fmt: skip
    # rng 0.5: first probe at PROBE_WAIT/2, the next ones 1 + 0.5 s apart, then ANNOUNCE_WAIT.
    timeline = [(0.4, []), (0.5, [expected_probe]), (1.9, []), (2.0, [expected_probe])]
    timeline += [(3.5, [expected_probe]), (5.4, [])]
    for now, frames in timeline:
        assert p.on_timer(now) == frames, now
    assert p.state is ProbeState.PROBING and p.next_deadline() == 5.5
    assert p.on_timer(5.5) == []
    assert p.state is ProbeState.FREE and p.result == A100
    assert p.describe() == "192.168.0.100 is free (0 in use before it)"


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (arp_frame(OP_REPLY, OTHER, "192.168.0.100", "0.0.0.0"), "uses it"),  # noqa: S104
        (arp_frame(OP_REQUEST, OTHER, "192.168.0.100", "192.168.0.1"), "uses it"),
        (arp_frame(OP_REQUEST, OTHER, "0.0.0.0", "192.168.0.100"), "is probing for it too"),  # noqa: S104
    ],
    ids=["reply", "request-from-it", "simultaneous-probe"],
)
def test_conflict_moves_on_to_the_next_candidate(frame: bytes, why: str) -> None:
    p = prober([A100, A101])
    p.on_timer(0.5)
    p.on_frame(0.6, frame)
    assert p.current == A101 and p.conflicts == [(A100, f"02:00:00:00:00:99 {why}")]
    for now in (0.6 + 0.5, 2.6, 4.1, 6.1):
        p.on_timer(now)
    assert p.state is ProbeState.FREE and p.result == A101


@pytest.mark.parametrize(
    "frame",
    [
        arp_frame(OP_REQUEST, MAC, "0.0.0.0", "192.168.0.100"),  # noqa: S104 (our own probe)
        arp_frame(OP_REQUEST, OTHER, "192.168.0.7", "192.168.0.100"),  # someone asking for it
        arp_frame(OP_REPLY, OTHER, "192.168.0.101", "192.168.0.7"),  # another address
    ],
    ids=["own-probe", "question-about-it", "other-address"],
)
def test_frames_that_are_not_conflicts(frame: bytes) -> None:
    p = prober([A100])
    p.on_timer(0.5)
    p.on_frame(0.6, frame)
    assert p.current == A100 and p.conflicts == []


def test_every_candidate_in_use_is_reported_with_reasons() -> None:
    p = prober([A100, A101])
    p.on_frame(0.1, arp_frame(OP_REPLY, OTHER, "192.168.0.100", "0.0.0.0"))  # noqa: S104
    p.on_frame(0.2, arp_frame(OP_REPLY, OTHER, "192.168.0.101", "0.0.0.0"))  # noqa: S104
    assert p.state is ProbeState.EXHAUSTED and p.next_deadline() is None
    assert "no free address among 2 candidates" in p.describe()
    assert "192.168.0.101 (02:00:00:00:00:99 uses it)" in p.describe()


def test_after_max_conflicts_new_candidates_are_rate_limited() -> None:
    timing = Timing(max_conflicts=2, rate_limit_interval=60.0)
    addrs = [ipaddress.IPv4Address(f"192.168.0.{n}") for n in range(100, 104)]
    p = prober(addrs, timing)
    for n in (100, 101):
        p.on_frame(1.0, arp_frame(OP_REPLY, OTHER, f"192.168.0.{n}", "0.0.0.0"))  # noqa: S104
    # Two conflicts: the third candidate may start only RATE_LIMIT_INTERVAL after the last.
    assert p.current == addrs[2]
    assert p.next_deadline() == pytest.approx(1.0 + 60.0 + 0.5)


def test_candidates_preferred_first_then_wrapping_without_excluded() -> None:
    got = candidates(
        ipaddress.IPv4Network("10.0.0.0/29"),
        ipaddress.IPv4Address("10.0.0.5"),
        exclude=[ipaddress.IPv4Address("10.0.0.1"), ipaddress.IPv4Address("10.0.0.6")],
    )
    assert [str(a) for a in got] == ["10.0.0.5", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
    assert candidates(NET, None, limit=2) == [
        ipaddress.IPv4Address("192.168.0.1"),
        ipaddress.IPv4Address("192.168.0.2"),
    ]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_any_bytes_are_a_frame_or_a_counted_drop(data: bytes) -> None:
    p = prober([A100])
    p.on_frame(0.1, data)
    assert p.state in (ProbeState.PROBING, ProbeState.EXHAUSTED)
    assert sum(p.drops.values()) + len(p.conflicts) <= 1


# -- real: two namespaces ----------------------------------------------------------------


@pytest.fixture
def two_namespaces() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces and a veth pair")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2: apt-get install -y --no-install-recommends iproute2")
    from cjb.common.netlink import Link, Namespace, NetworkSpec, Veth, VethPeer, apply, remove
    from cjb.common.netlink.real import RealKernel

    prefix = f"cjbBa{secrets.token_hex(2)}-"
    probe_ns, host_ns = prefix + "probe", prefix + "host"
    spec = NetworkSpec(
        owner=f"test-arp-{prefix}",
        namespace_prefix=prefix,
        namespaces=(
            Namespace(
                probe_ns,
                (Link("p0", Veth(peer="h0", peer_netns=host_ns)),),
                owned=True,
            ),
            Namespace(
                host_ns,
                (
                    Link(
                        "h0",
                        VethPeer(of="p0"),
                        addresses=(ipaddress.ip_interface("192.168.77.100/24"),),
                    ),
                ),
                owned=True,
            ),
        ),
    )
    with RealKernel() as kernel:
        try:
            apply(kernel, spec)
            yield probe_ns, host_ns
        finally:
            remove(kernel, spec)
            assert not [n for n in kernel.namespaces() if n.startswith(prefix)]


@pytest.mark.root
def test_real_prober_skips_the_address_a_host_already_holds(
    two_namespaces: tuple[str, str],
) -> None:
    from cjb.appliance.arp_probe_io import probe_free_address
    from cjb.appliance.lan import scaled
    from cjb.common.netlink import netns

    probe_ns, _ = two_namespaces
    net = ipaddress.IPv4Network("192.168.77.0/24")
    order = candidates(net, ipaddress.IPv4Address("192.168.77.100"), limit=3)
    with netns(probe_ns):
        # Linux answers a probe (sender 0.0.0.0) for an address it holds: RFC 5227 §2.1.1.
        result = probe_free_address("p0", order, timing=scaled(Timing(), 0.1))
    assert result.state is ProbeState.FREE
    assert result.result == ipaddress.IPv4Address("192.168.77.101")
    assert [str(a) for a, _ in result.conflicts] == ["192.168.77.100"]
    assert "uses it" in result.conflicts[0][1]
