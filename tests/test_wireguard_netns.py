"""WireGuard (wireguard-go here) between two namespaces this test creates.

    cjbwgt<run>-a                                   cjbwgt<run>-b
      wgt<run>a  fd00:77::1/64  ══ WireGuard ══  wgt<run>b  fd00:77::2/64
      eth0  fd00:1::1/64 ───────── veth ───────── eth0  fd00:1::2/64

Checks: handshake and ping over the tunnel, byte counters and handshake time read back,
a second apply changes nothing, removing the peer stops traffic, delete leaves no socket,
process or namespace behind.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from cjb.common.netlink import Existing, Link, Namespace, NetworkSpec, Veth, VethPeer, apply, netns
from cjb.common.netlink import remove as remove_spec
from cjb.common.netlink.real import RealKernel
from cjb.common.wireguard import (
    DeviceSpec,
    PeerSpec,
    WireGuard,
    generate_private_key,
    public_key,
)
from cjb.common.wireguard.model import Endpoint
from cjb.common.wireguard.userspace import SOCKET_DIR, _pids_of

pytestmark = [pytest.mark.root]

OVERLAY = ipaddress.IPv6Network("fd00:77::/64")


def _require() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces and tun devices")
    if shutil.which("wireguard-go") is None and not os.path.isdir("/sys/module/wireguard"):
        pytest.skip("no WireGuard: apt-get install -y --no-install-recommends wireguard-go")


def _ping(ns: str, target: str, count: int = 1, wait: float = 1) -> bool:
    with netns(ns):
        proc = subprocess.run(
            ["ping", "-6", "-c", str(count), "-W", str(wait), target],
            capture_output=True,
            check=False,
        )
    return proc.returncode == 0


class Pair:
    def __init__(self) -> None:
        self.run = secrets.token_hex(2)
        self.prefix = f"cjbwgt{self.run}-"
        self.ns_a, self.ns_b = self.prefix + "a", self.prefix + "b"
        self.if_a, self.if_b = f"wgt{self.run}a", f"wgt{self.run}b"
        self.key_a, self.key_b = generate_private_key(), generate_private_key()
        self.wg = WireGuard()

    def underlay_spec(self) -> NetworkSpec:
        return NetworkSpec(
            "wgtest",
            (
                Namespace(
                    self.ns_a,
                    (
                        Link("lo", Existing()),
                        Link(
                            "eth0",
                            Veth("eth0", self.ns_b),
                            addresses=(ipaddress.ip_interface("fd00:1::1/64"),),
                        ),
                    ),
                    owned=True,
                    sysctls=(("net/ipv6/conf/all/accept_dad", "0"),),
                ),
                Namespace(
                    self.ns_b,
                    (
                        Link("lo", Existing()),
                        Link(
                            "eth0",
                            VethPeer("eth0"),
                            addresses=(ipaddress.ip_interface("fd00:1::2/64"),),
                        ),
                    ),
                    owned=True,
                    sysctls=(("net/ipv6/conf/all/accept_dad", "0"),),
                ),
            ),
            namespace_prefix=self.prefix,
        )

    def overlay_spec(self) -> NetworkSpec:
        spec = self.underlay_spec()
        a, b = spec.namespaces
        wa = Link(
            self.if_a, Existing(), mtu=1420, addresses=(ipaddress.ip_interface("fd00:77::1/64"),)
        )
        wb = Link(
            self.if_b, Existing(), mtu=1420, addresses=(ipaddress.ip_interface("fd00:77::2/64"),)
        )
        return NetworkSpec(
            spec.owner,
            (
                Namespace(a.name, (*a.links, wa), owned=True, sysctls=a.sysctls),
                Namespace(b.name, (*b.links, wb), owned=True, sysctls=b.sysctls),
            ),
            namespace_prefix=self.prefix,
        )

    def spec_a(self, with_peer: bool = True) -> DeviceSpec:
        peers = ()
        if with_peer:
            peers = (
                PeerSpec(
                    public_key(self.key_b),
                    (ipaddress.ip_network("fd00:77::2/128"),),
                    Endpoint(ipaddress.ip_address("fd00:1::2"), 51902),
                    keepalive=0,
                ),
            )
        return DeviceSpec(self.key_a, 51901, peers)

    def spec_b(self) -> DeviceSpec:
        return DeviceSpec(
            self.key_b,
            51902,
            (PeerSpec(public_key(self.key_a), (ipaddress.ip_network("fd00:77::1/128"),)),),
        )

    def cleanup(self) -> None:
        for ns, name in ((self.ns_a, self.if_a), (self.ns_b, self.if_b)):
            self.wg.delete(ns, name)
        with RealKernel() as kernel:
            remove_spec(kernel, self.underlay_spec())


@pytest.fixture
def pair() -> Iterator[Pair]:
    _require()
    p = Pair()
    try:
        with RealKernel() as kernel:
            apply(kernel, p.underlay_spec())
        yield p
    finally:
        p.cleanup()
        assert not [n for n in os.listdir("/run/netns") if n.startswith(p.prefix)]


def test_handshake_ping_counters_idempotent_remove_delete(pair: Pair) -> None:
    wg = pair.wg
    assert wg.ensure(pair.ns_a, pair.if_a) is True
    assert wg.ensure(pair.ns_b, pair.if_b) is True
    assert wg.ensure(pair.ns_a, pair.if_a) is False  # adopted, not recreated
    # The tun device lives in the namespace, not where we run.
    with RealKernel() as kernel:
        assert pair.if_a in kernel.links(pair.ns_a)
        assert pair.if_a not in kernel.links(None)
        apply(kernel, pair.overlay_spec())

    first = wg.apply(pair.ns_a, pair.if_a, pair.spec_a())
    assert "set private key" in first and any(c.startswith("add peer") for c in first)
    wg.apply(pair.ns_b, pair.if_b, pair.spec_b())
    assert wg.apply(pair.ns_a, pair.if_a, pair.spec_a()) == []  # idempotent
    assert wg.apply(pair.ns_b, pair.if_b, pair.spec_b()) == []

    assert _ping(pair.ns_a, "fd00:77::2", count=3, wait=2)
    status_a = wg.show(pair.ns_a, pair.if_a)
    peer = status_a.peer(public_key(pair.key_b))
    assert peer is not None
    assert peer.last_handshake is not None and peer.handshake_age(time.time()) < 30
    assert peer.rx_bytes > 0 and peer.tx_bytes > 0
    assert status_a.listen_port == 51901
    # b learned a's endpoint by roaming (no endpoint configured there).
    peer_b = wg.show(pair.ns_b, pair.if_b).peer(public_key(pair.key_a))
    assert peer_b is not None and peer_b.endpoint == Endpoint(
        ipaddress.ip_address("fd00:1::1"), 51901
    )
    # Keys never appear in a repr.
    assert pair.key_a not in repr(pair.spec_a()) and pair.key_a not in repr(status_a)

    # Removing the peer on b: a's packets are no longer accepted.
    assert wg.apply(pair.ns_b, pair.if_b, DeviceSpec(pair.key_b, 51902, ())) == [
        f"remove peer {public_key(pair.key_a)[:8]}…"
    ]
    assert not _ping(pair.ns_a, "fd00:77::2", count=2, wait=1)

    wg.delete(pair.ns_a, pair.if_a)
    assert not (SOCKET_DIR / f"{pair.if_a}.sock").exists()
    assert not _pids_of("wireguard-go", pair.if_a)
    assert not wg.exists(pair.ns_a, pair.if_a)


def test_dead_process_is_noticed_and_replaced(pair: Pair) -> None:
    wg = pair.wg
    wg.ensure(pair.ns_a, pair.if_a)
    (pid,) = _pids_of("wireguard-go", pair.if_a)
    os.kill(pid, 9)
    deadline = time.monotonic() + 3
    while wg.exists(pair.ns_a, pair.if_a) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not wg.exists(pair.ns_a, pair.if_a)
    assert wg.ensure(pair.ns_a, pair.if_a) is True
    wg.apply(pair.ns_a, pair.if_a, pair.spec_a(with_peer=False))
    assert wg.show(pair.ns_a, pair.if_a).listen_port == 51901
