"""The kernel fast path inside the real gateway: attach, exactly-once delivery, status
counters, and switching a tenant back to userspace (which detaches it).

    app ns                              gw ns (cjb gateway run)                 svc ns
    vx0 (VXLAN 7) ~ wan0 ==veth== wan0 ~ vx-t1 [tc: fast path] --> sl-t1 ==veth== t1
    fd00:c7::2                    fd00:c7::1     worker (AF_PACKET + skip filters)  fe80::c0a8:64

Frames are injected and captured with AF_PACKET on app/vx0 and svc/t1.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from bpfkit import packet_socket, recv_all, require_fast_path

from cjb.common.netlink import Link, Namespace, NetworkSpec, Veth, VethPeer, Vxlan, apply, netns
from cjb.common.netlink import remove as remove_spec
from cjb.common.netlink.real import RealKernel
from cjb.common.private_file import atomic_write
from cjb.gateway.xlat import Direction, Translator, XlatConfig

pytestmark = [pytest.mark.root, pytest.mark.slow]

LAN_MAC = bytes.fromhex("02000000000a")
SVC_MAC = bytes.fromhex("02c700000701")  # service_mac(vni 7, link 1)
LAN4, SVC4 = bytes((192, 168, 0, 10)), bytes((192, 168, 0, 100))
# Forward-direction test flows go to an address the service host does not own, so its
# stack stays silent (no RSTs of its own crossing the fast path).
OTHER4 = bytes((192, 168, 0, 101))
FE80_96 = b"\xfe\x80" + bytes(10)
PORT = 40404  # our test flows' TCP port, to tell them from the service host's own traffic


def _csum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def tcp(src: bytes, dst: bytes, seq: int, pseudo: bytes) -> bytes:
    seg = struct.pack("!HHIIBBHHH", PORT, 80, seq, 0, 0x50, 0x10, 512, 0, 0) + b"x" * 32
    c = _csum(pseudo + seg)
    return seg[:16] + c.to_bytes(2, "big") + seg[18:]


def v4_frame(seq: int) -> bytes:
    seg = tcp(LAN4, OTHER4, seq, LAN4 + OTHER4 + struct.pack("!BBH", 0, 6, 52))
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 72, seq, 0x4000, 64, 6, 0, LAN4, OTHER4)
    hdr = hdr[:10] + _csum(hdr).to_bytes(2, "big") + hdr[12:]
    return SVC_MAC + LAN_MAC + b"\x08\x00" + hdr + seg


def v6_frame(seq: int) -> bytes:
    src, dst = FE80_96 + SVC4, FE80_96 + LAN4
    seg = tcp(src, dst, seq, src + dst + struct.pack("!IxxxB", 52, 6))
    hdr = struct.pack("!IHBB", 0x60000000, 52, 6, 64) + src + dst
    return LAN_MAC + SVC_MAC + b"\x86\xdd" + hdr + seg


ARP_REQUEST = (
    b"\xff" * 6
    + LAN_MAC
    + b"\x08\x06"
    + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
    + LAN_MAC
    + LAN4
    + bytes(6)
    + SVC4
)


@dataclass
class Bed:
    prefix: str
    config: Path
    status: Path
    proc: subprocess.Popen[bytes]
    app: socket.socket
    svc: socket.socket


def _sock(ns: str, ifname: str) -> socket.socket:
    with netns(ns):
        return packet_socket(ifname)


def _ours(frames: list[bytes], ethertype: bytes) -> list[bytes]:
    off = 34 if ethertype == b"\x08\x00" else 54
    port = PORT.to_bytes(2, "big")
    return [f for f in frames if f[12:14] == ethertype and f[off : off + 2] == port]


def _status(path: Path) -> dict[str, object]:
    try:
        data: dict[str, object] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data


def _tenant(bed: Bed) -> dict[str, object]:
    tenants = _status(bed.status).get("tenants") or {}
    assert isinstance(tenants, dict)
    return tenants.get("t1") or {}


def _wait(pred, what: str, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _config(prefix: str, state: Path, mode: str, io: str = "packet") -> dict[str, object]:
    return {
        "userspace_io": io,
        "underlay": {"address": "fd00:c7::1", "device": "wan0"},
        "service_netns": prefix + "svc",
        "state_dir": str(state),
        "fast_path": mode,
        "tenants": {"t1": {"vni": 7, "appliance": "fd00:c7::2", "native_ipv6": False}},
    }


def _write(path: Path, data: dict[str, object]) -> None:
    atomic_write(path, json.dumps(data), 0o644, durable=False)


def _spec(prefix: str) -> NetworkSpec:
    import ipaddress

    gw, app, svc = prefix + "gw", prefix + "app", prefix + "svc"
    no_v6 = (("ipv6.disable_ipv6", "1"),)
    return NetworkSpec(
        "bpfgw",
        (
            Namespace(
                gw,
                (
                    Link(
                        "wan0",
                        Veth(peer="wan0", peer_netns=app),
                        mtu=9000,  # room for VXLAN over IPv6 around 1500-byte frames
                        addresses=(ipaddress.IPv6Interface("fd00:c7::1/64"),),
                    ),
                ),
                owned=True,
            ),
            Namespace(
                app,
                (
                    Link(
                        "wan0",
                        VethPeer(of="wan0"),
                        mtu=9000,
                        addresses=(ipaddress.IPv6Interface("fd00:c7::2/64"),),
                    ),
                    Link(
                        "vx0",
                        Vxlan(
                            vni=7,
                            local=ipaddress.IPv6Address("fd00:c7::2"),
                            remote=ipaddress.IPv6Address("fd00:c7::1"),
                            underlay="wan0",
                        ),
                        mtu=1500,
                        sysctls=no_v6,  # offloads stay on: the client's TCP sends TSO bursts
                    ),
                ),
                owned=True,
            ),
            Namespace(svc, owned=True),
        ),
        namespace_prefix=prefix,
    )


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    require_fast_path("creates network namespaces, VXLAN and tc BPF programs")
    prefix = f"cjbbpg{os.getpid() % 100000}-"
    state = tmp_path_factory.mktemp("gw")
    config = state / "gw.json"
    _write(config, _config(prefix, state, "kernel"))
    kernel = RealKernel()
    proc = None
    socks: list[socket.socket] = []
    try:
        apply(kernel, _spec(prefix))
        with netns(prefix + "gw"):
            proc = subprocess.Popen(
                [sys.executable, "-m", "cjb.cli", "gateway", "run", "--config", str(config)],
                stderr=open(state / "gateway.log", "wb"),  # noqa: SIM115 (the child owns it)
            )
        bed = Bed(prefix, config, state / "status.json", proc, None, None)  # type: ignore[arg-type]
        _wait(lambda: _tenant(bed).get("state") == "running", "the gateway's tenant t1")
        _wait(
            lambda: (_tenant(bed).get("fast_path") or {}).get("counters") or {},  # type: ignore[union-attr]
            "fast path counters in the status file",
        )
        bed.app = _sock(prefix + "app", "vx0")
        bed.svc = _sock(prefix + "svc", "t1")
        socks = [bed.app, bed.svc]
        time.sleep(0.5)
        yield bed
    finally:
        for s in socks:
            s.close()
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        remove_spec(kernel, _spec(prefix))
        kernel.close()
        log = (state / "gateway.log").read_text(errors="replace")
        assert "Traceback" not in log, log
    assert not [n for n in os.listdir("/run/netns") if n.startswith(prefix)]


def _router_rx(bed: Bed, port: str) -> int:
    router = _tenant(bed).get("router") or {}
    assert isinstance(router, dict)
    return int(router["ports"][port]["rx_frames"])


def _fast(bed: Bed) -> dict[str, int]:
    fast = _tenant(bed).get("fast_path") or {}
    assert isinstance(fast, dict)
    return dict(fast.get("counters") or {})


def test_kernel_mode_translates_each_frame_exactly_once(bed: Bed) -> None:
    cfg = XlatConfig(lan_mtu=1500, service_mtu=1520)
    tunnel_rx = _router_rx(bed, "tunnel")
    for seq in range(200):
        bed.app.send(v4_frame(seq))
    bed.app.send(ARP_REQUEST)  # not for the fast path: the worker answers it as NDP
    got = recv_all(bed.svc)
    ours = _ours(got, b"\x86\xdd")
    want = [
        Translator(cfg).translate(v4_frame(s), Direction.TO_SERVICE).emits[0].frame
        for s in range(200)
    ]
    assert ours == want
    ns = [f for f in got if f[12:14] == b"\x86\xdd" and f[20] == 58 and f[54] == 135]
    assert len(ns) == 1, "the ARP request must reach the slow path and come out as one NS"

    for seq in range(100):
        bed.svc.send(v6_frame(seq))
    back = _ours(recv_all(bed.app), b"\x08\x00")
    assert back, "nothing came back"
    # DF-clear (small) packets take IPv4 IDs from the program's counter, one after another.
    ref = Translator(cfg, first_ipv4_id=int.from_bytes(back[0][18:20], "big"))
    assert back == [ref.translate(v6_frame(s), Direction.TO_LAN).emits[0].frame for s in range(100)]

    def counted() -> bool:
        c = _fast(bed)
        return c.get("to_service_frames", 0) >= 200 and c.get("to_lan_frames", 0) >= 100

    _wait(counted, "BPF counters in the status file")
    # Exactly once: the worker saw the ARP request only, none of the 200 fast-path frames.
    assert _router_rx(bed, "tunnel") - tunnel_rx == 1
    c = _fast(bed)
    assert c["to_service_frames"] == 200 and c["to_lan_frames"] == 100
    assert c["errors"] == 0
    # `cjb gateway status` shows them.
    from cjb.gateway.dataplane.status import read_status, render

    text = render(read_status(bed.status), bed.status)
    assert "kernel fast path: to service 200 frames" in text, text


def test_kernel_mode_leaves_unicast_no_cloud_link_owns_to_the_lan_guard(bed: Bed) -> None:
    """A LAN's unknown unicast (to a MAC that is not the service link's) is not translated
    by the tc program: the worker's LAN guard drops it and counts it, as in userspace."""
    stranger = b"\x02\x11\x22\x33\x44\x55"
    before = dict((_tenant(bed).get("router") or {}).get("drops") or {})  # type: ignore[union-attr]
    slow = _fast(bed).get("slow_path_tunnel", 0)
    recv_all(bed.svc, 0.1)
    for seq in range(50):
        bed.app.send(stranger + v4_frame(seq)[6:])
    bed.app.send(v4_frame(50))  # the control, to the service link's MAC
    ours = _ours(recv_all(bed.svc), b"\x86\xdd")
    assert [f[58:62] for f in ours] == [(50).to_bytes(4, "big")], "only the control crosses"

    def counted() -> bool:
        drops = (_tenant(bed).get("router") or {}).get("drops") or {}  # type: ignore[union-attr]
        return drops.get("unicast-not-for-cloud", 0) - before.get("unicast-not-for-cloud", 0) >= 50  # type: ignore[union-attr]

    _wait(counted, "the worker's unicast-not-for-cloud drops")
    assert _fast(bed).get("slow_path_tunnel", 0) - slow == 50


def test_switching_to_userspace_detaches_and_the_worker_takes_over(bed: Bed) -> None:
    _write(bed.config, _config(bed.prefix, bed.status.parent, "userspace"))
    with RealKernel() as kernel:

        def detached() -> bool:
            # One reconcile detaches the ports one after another: wait for both.
            return all(
                kernel.tc_ingress(bed.prefix + "gw", port) is None for port in ("vx-t1", "sl-t1")
            )

        _wait(detached, "the fast path to be detached from vx-t1 and sl-t1")

    def restarted() -> bool:
        t = _tenant(bed)
        fast = t.get("fast_path") or {}
        return (
            t.get("state") == "running" and isinstance(fast, dict) and fast["mode"] == "userspace"
        )

    _wait(restarted, "the restarted worker")
    time.sleep(1.5)  # one more status period: `before` comes from the new worker
    recv_all(bed.svc, 0.1)
    before = _router_rx(bed, "tunnel")
    for seq in range(20):
        bed.app.send(v4_frame(seq))
    ours = _ours(recv_all(bed.svc), b"\x86\xdd")
    assert len(ours) == 20
    _wait(lambda: _router_rx(bed, "tunnel") - before >= 20, "worker counters")
    fast = _tenant(bed).get("fast_path") or {}
    assert isinstance(fast, dict) and fast.get("mode") == "userspace" and not fast.get("counters")


def test_tcp_through_the_fast_path_with_offloads_on(bed: Bed) -> None:
    """GRO/TSO super-frames (offloads on with `userspace_io: packet-vnet`) through the tc
    program: bpf_skb_change_proto keeps the GSO type right and the partial checksums are
    adjusted as pseudo-header sums. 16 MiB each way, checked end to end."""
    import hashlib
    import threading

    _write(bed.config, _config(bed.prefix, bed.status.parent, "kernel", "packet-vnet"))

    def kernel_again() -> bool:
        t = _tenant(bed)
        fast = t.get("fast_path") or {}
        return t.get("state") == "running" and isinstance(fast, dict) and bool(fast.get("counters"))

    _wait(kernel_again, "the tenant back in kernel mode")
    time.sleep(1.5)
    before = _fast(bed)
    worker_before = _router_rx(bed, "tunnel") + _router_rx(bed, "service")
    payload = os.urandom(16 << 20)
    with netns(bed.prefix + "svc"):
        listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("::", 8080, 0, 0))
    listener.listen(1)
    listener.settimeout(20)
    received: list[str] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(20)
            digest = hashlib.sha256()
            left = len(payload)
            while left:
                chunk = conn.recv(min(left, 1 << 20))
                if not chunk:
                    break
                digest.update(chunk)
                left -= len(chunk)
            received.append(digest.hexdigest())
            conn.sendall(payload)  # and back: service -> LAN through the fast path

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    with netns(bed.prefix + "app"):
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with client:
        # The app namespace's vx0 has no address: give the client one for this test.
        with netns(bed.prefix + "app"):
            subprocess.run(["ip", "addr", "replace", "192.168.0.10/24", "dev", "vx0"], check=True)
        client.settimeout(20)
        client.connect(("192.168.0.100", 8080))
        client.sendall(payload)
        digest = hashlib.sha256()
        left = len(payload)
        while left:
            chunk = client.recv(min(left, 1 << 20))
            assert chunk, "connection closed early"
            digest.update(chunk)
            left -= len(chunk)
    server.join(20)
    listener.close()
    want = hashlib.sha256(payload).hexdigest()
    assert received == [want] and digest.hexdigest() == want

    def moved() -> bool:
        c = _fast(bed)
        return c.get("to_service_bytes", 0) - before.get("to_service_bytes", 0) >= len(payload)

    _wait(moved, "the payload counted by the fast path")
    after = _fast(bed)
    assert after["to_lan_bytes"] - before.get("to_lan_bytes", 0) >= len(payload)
    frames = after["to_service_frames"] - before.get("to_service_frames", 0)
    sent = after["to_service_bytes"] - before.get("to_service_bytes", 0)
    print(f"to service: {frames} frames, {sent} bytes, {sent / frames:.0f} bytes/frame")
    assert sent / frames > 1500, "no GSO super-frames reached the tc program"
    # Exactly once with vnet sockets too: the worker saw at most the ARP/NDP exchange.
    time.sleep(1.2)
    worker = _router_rx(bed, "tunnel") + _router_rx(bed, "service") - worker_before
    assert worker <= 10, f"the worker also read {worker} frames of the fast path's flow"
    assert after["errors"] == 0


def test_default_config_falls_back_to_userspace_when_the_object_is_missing(bed: Bed) -> None:
    """No `fast_path` in the config (the default: kernel) and an object that is not there:
    the gateway says "userspace" with the reason, and the worker carries the traffic."""
    bed.proc.send_signal(signal.SIGTERM)
    bed.proc.wait(10)
    config = _config(bed.prefix, bed.status.parent, "kernel")
    del config["fast_path"]
    _write(bed.config, config)
    bed.status.unlink(missing_ok=True)
    missing = bed.status.parent / "no-such-dir" / "xlat.bpf.o"
    with netns(bed.prefix + "gw"):
        bed.proc = subprocess.Popen(
            [sys.executable, "-m", "cjb.cli", "gateway", "run", "--config", str(bed.config)],
            stderr=open(bed.status.parent / "gateway.log", "ab"),  # noqa: SIM115
            env={**os.environ, "CJB_BPF_OBJECT": str(missing)},
        )
    _wait(lambda: _tenant(bed).get("state") == "running", "the restarted gateway's tenant")
    summary = _status(bed.status).get("fast_path") or {}
    assert isinstance(summary, dict) and summary["mode"] == "userspace", summary
    assert f"{missing} (CJB_BPF_OBJECT) is missing" in str(summary["reason"])
    with RealKernel() as kernel:
        _wait(
            lambda: all(
                kernel.tc_ingress(bed.prefix + "gw", p) is None for p in ("vx-t1", "sl-t1")
            ),
            "the previous run's programs detached",
        )
    shown = subprocess.run(
        [sys.executable, "-m", "cjb.cli", "gateway", "status", "--config", str(bed.config)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "fast path: userspace (reason: kernel fast path unavailable" in shown, shown
    time.sleep(1.5)  # one status period: `before` comes from the new worker
    recv_all(bed.svc, 0.1)
    before = _router_rx(bed, "tunnel")
    for seq in range(20):
        bed.app.send(v4_frame(seq))
    assert len(_ours(recv_all(bed.svc), b"\x86\xdd")) == 20
    _wait(lambda: _router_rx(bed, "tunnel") - before >= 20, "the worker's counters")
    log = (bed.status.parent / "gateway.log").read_text(errors="replace")
    assert "CJB_BPF_OBJECT) is missing" in log  # the reason is logged too
