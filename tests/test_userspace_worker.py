"""The translator worker on real veths, in both IO modes: TCP both ways arrives intact.

    lan ns                       gw ns (worker: open_worker, asyncio in a thread)      svc ns
    eth0 192.168.0.10/24 ─veth─ lan0 [TUNNEL] ── translator ── [SERVICE] svc0 ─veth─ tenant0
                                                                        fe80::c0a8:64/64 only

"packet": offloads off on every link, one wire frame per recv. "packet-vnet": offloads
on, so the veths pass TSO super-frames and the worker translates them once each
(PACKET_VNET_HDR); the kernel segments them on the way out. Each byte stream is checked
with SHA-256, and the GSO counters prove the super-frame path carried it.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import os
import secrets
import socket
import threading
from collections.abc import Iterator

import pytest

from cjb.common.netlink import Link, Namespace, NetworkSpec, Veth, VethPeer, apply, netns
from cjb.common.netlink import remove as remove_spec
from cjb.common.netlink.real import RealKernel
from cjb.gateway.dataplane.kernel_spec import PORT_SYSCTLS, SERVICE_SYSCTLS
from cjb.gateway.dataplane.packet_io import ignores_outgoing
from cjb.gateway.dataplane.router import Port, VnetFrameRouter
from cjb.gateway.dataplane.worker import TenantWorker, open_worker
from cjb.gateway.xlat import Direction, DropReason, Translator, XlatConfig

pytestmark = pytest.mark.root
PAYLOAD = 6 << 20
PORT = 8765


def spec(run: str, vnet: bool) -> NetworkSpec:
    prefix = f"cjbusr{run}-"
    off = {"offloads_off": not vnet, "offloads_on": vnet}
    lan, gw, svc = prefix + "lan", prefix + "gw", prefix + "svc"
    return NetworkSpec(
        "test",
        (
            Namespace(
                lan,
                (
                    Link(
                        "eth0",
                        Veth("lan0", gw),
                        mtu=1500,
                        addresses=(ipaddress.ip_interface("192.168.0.10/24"),),
                        **off,
                    ),
                ),
                owned=True,
            ),
            Namespace(
                gw,
                (
                    Link("lan0", VethPeer("eth0"), mtu=1500, sysctls=PORT_SYSCTLS, **off),
                    Link("svc0", Veth("tenant0", svc), mtu=1520, sysctls=PORT_SYSCTLS, **off),
                ),
                owned=True,
            ),
            Namespace(
                svc,
                (
                    Link(
                        "tenant0",
                        VethPeer("svc0"),
                        mtu=1520,
                        addresses=(ipaddress.IPv6Interface("fe80::c0a8:64/64"),),
                        sysctls=SERVICE_SYSCTLS,
                        **off,
                    ),
                ),
                owned=True,
            ),
        ),
        namespace_prefix=prefix,
    )


@pytest.fixture(params=["packet", "packet-vnet"])
def topology(request: pytest.FixtureRequest) -> Iterator[tuple[NetworkSpec, str]]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces and veth links")
    mode: str = request.param
    net = spec(secrets.token_hex(2), mode != "packet")
    try:
        with RealKernel() as kernel:
            apply(kernel, net)
        yield net, mode
    finally:
        with RealKernel() as kernel:
            remove_spec(kernel, net)
        left = [n.name for n in net.namespaces if n.name and os.path.exists(f"/run/netns/{n.name}")]
        assert not left, f"namespaces left behind: {left}"


def run_worker(worker: TenantWorker, stop: threading.Event) -> None:
    loop = asyncio.new_event_loop()
    try:
        worker.start(loop)

        async def wait() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.05)

        loop.run_until_complete(wait())
    finally:
        worker.stop()
        loop.close()


def recv_all(conn: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = conn.recv(min(1 << 20, n - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def test_tcp_both_ways_through_the_worker(topology: tuple[NetworkSpec, str]) -> None:
    net, mode = topology
    lan, gw, svc = (n.name for n in net.namespaces)
    assert lan is not None and gw is not None and svc is not None
    translator = Translator(XlatConfig(lan_mtu=1500, service_mtu=1520))
    with netns(gw):
        worker = open_worker(translator, False, {Port.TUNNEL: "lan0", Port.SERVICE: "svc0"}, mode)
    with netns(svc):
        server = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        server.bind(("::", PORT))
        server.listen(1)
    with netns(lan):
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Our own frames are never queued back to us (PACKET_IGNORE_OUTGOING, Linux 4.20).
    assert all(ignores_outgoing(s) for s in worker.sockets.values())
    up_data, down_data = os.urandom(PAYLOAD), os.urandom(PAYLOAD)
    got: dict[str, object] = {}

    def serve() -> None:
        conn, peer = server.accept()
        got["peer"] = peer
        with conn:
            got["up"] = hashlib.sha256(recv_all(conn, PAYLOAD)).hexdigest()
            conn.sendall(down_data)

    stop = threading.Event()
    threads = [
        threading.Thread(target=run_worker, args=(worker, stop), daemon=True),
        threading.Thread(target=serve, daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        server.settimeout(30)
        client.settimeout(30)
        client.connect(("192.168.0.100", PORT))
        client.sendall(up_data)
        down = recv_all(client, PAYLOAD)
        threads[1].join(30)
    finally:
        client.close()
        server.close()
        stop.set()
        threads[0].join(10)
    assert got.get("up") == hashlib.sha256(up_data).hexdigest()
    assert hashlib.sha256(down).digest() == hashlib.sha256(down_data).digest()
    peer = got["peer"]
    assert isinstance(peer, tuple) and peer[0] == "fe80::c0a8:a"  # scope id = tenant link
    drops = worker.router.counters.drops
    assert not {k for k in drops if "error" in k or k.startswith("gso-")}, drops
    assert translator.counters.drops[DropReason.INTERNAL_ERROR] == 0
    if mode != "packet":
        assert isinstance(worker.router, VnetFrameRouter)
        gso = worker.router.vnet.counters
        # Super-frames both ways, each standing for several wire segments.
        assert gso.superframes[Direction.TO_SERVICE] > 0
        assert gso.superframes[Direction.TO_LAN] > 0
        assert gso.segments[Direction.TO_SERVICE] > 2 * gso.superframes[Direction.TO_SERVICE]
    else:
        assert not isinstance(worker.router, VnetFrameRouter)
        assert worker.router.counters.ports[Port.TUNNEL].rx_frames > PAYLOAD // 1500


def test_frames_the_kernel_dropped_are_counted(topology: tuple[NetworkSpec, str]) -> None:
    net, mode = topology
    lan, gw, _svc = (n.name for n in net.namespaces)
    assert lan is not None and gw is not None
    with netns(gw):
        worker = open_worker(
            Translator(XlatConfig()), False, {Port.TUNNEL: "lan0", Port.SERVICE: "svc0"}, mode
        )
    try:
        # A worker that never reads, with a tiny queue: the kernel must drop, and say so.
        worker.sockets[Port.TUNNEL].setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with netns(lan):
            sender = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            sender.bind(("eth0", 0))
        with sender:
            frame = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
            for _ in range(300):
                sender.send(frame + bytes(100))
        worker.poll_kernel_drops()
        assert worker.router.counters.drops["rx-kernel-tunnel"] > 100
    finally:
        worker.stop()


def test_an_exception_in_the_translator_is_counted_logged_and_survived(
    topology: tuple[NetworkSpec, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A fault injected into the translator core (its full IPv4 path) for one kind of
    frame, UDP to port 9999 sent with IPv4 options so that no fast path takes it: on the
    real worker those frames are internal-error drops whose exception type and message
    reach the router's last_error and the log, and the worker keeps translating the rest."""
    from cjb.gateway.xlat import translator as translator_module

    net, mode = topology
    lan, gw, svc = (n.name for n in net.namespaces)
    assert lan is not None and gw is not None and svc is not None
    faulty_port = (9999).to_bytes(2, "big")
    real_full = translator_module.ipv4_to_service

    def fault(frame: bytes, *args: object) -> object:
        if frame[23] == 17 and frame[14 + 24 + 2 : 14 + 24 + 4] == faulty_port:
            raise RuntimeError("injected fault")
        return real_full(frame, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(translator_module, "ipv4_to_service", fault)
    caplog.set_level("ERROR", logger="cjb.gateway.worker")
    translator = Translator(XlatConfig(lan_mtu=1500, service_mtu=1520))
    with netns(gw):
        worker = open_worker(translator, False, {Port.TUNNEL: "lan0", Port.SERVICE: "svc0"}, mode)
    with netns(svc):
        receiver = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        receiver.bind(("::", 9998))
        receiver.settimeout(10)
    with netns(lan):
        faulty = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        faulty.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, b"\x01\x01\x01\x00")  # NOPs
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stop = threading.Event()
    thread = threading.Thread(target=run_worker, args=(worker, stop), daemon=True)
    thread.start()
    try:
        for i in range(5):
            faulty.sendto(b"boom %d" % i, ("192.168.0.100", 9999))
        sender.sendto(b"still here", ("192.168.0.100", 9998))
        data, peer = receiver.recvfrom(100)
    finally:
        faulty.close()
        sender.close()
        receiver.close()
        stop.set()
        thread.join(10)
    assert data == b"still here" and peer[0] == "fe80::c0a8:a"
    counters = worker.router.counters
    assert counters.drops["internal-error"] == 5
    assert translator.errors.total == 5
    assert counters.last_error is not None
    assert counters.last_error.startswith("translator: RuntimeError: injected fault (to-service")
    lines = [r.getMessage() for r in caplog.records if r.name == "cjb.gateway.worker"]
    assert lines and "RuntimeError: injected fault" in lines[0] and "svc0" in lines[0]
    assert len(lines) <= 2  # rate-bounded: not one line per failing frame
