"""Probe behind the worker's IO choice: which vnet-header port type moves TCP
super-frames fastest through a Python loop? No translation, just the IO.

    A eth0 10.97.0.1 ─veth─ pa ┐  M: Python forwarder  ┌ pb ─veth─ eth0 10.97.0.2 B
  packet-vnet: AF_PACKET + PACKET_VNET_HDR sockets on pa and pb (the worker's mode)
  tap-vnet:    taps ta/tb with IFF_VNET_HDR + TUNSETOFFLOAD(TSO); tc ingress redirects
               pa <-> ta and pb <-> tb (the extra hop a tap design needs)

A second probe, `--rx`, measures receiving only: how many 64-byte frames per second a
Python reader takes off an AF_PACKET socket with recv_into versus a TPACKET_V3 mmap ring,
while iperf3 floods UDP between two namespaces.

Reproduce (root, iperf3, tc): python bench/userspace_io_probe.py --seconds 4 --runs 2
                              python bench/userspace_io_probe.py --rx --seconds 3 --runs 2
A probe, not product code: it drives `ip`/`tc` directly and builds its own namespaces
(cjbiop<run>-a/m/b), removed on every exit path. Numbers are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import mmap
import os
import secrets
import select
import socket
import struct
import subprocess
import sys
import threading
import time

from cjb.common.netlink.nsenter import enter

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6 = 1, 2, 4
SOL_PACKET, PACKET_VNET_HDR, PACKET_IGNORE_OUTGOING = 263, 15, 23


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
    fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
    return fd


def open_packet(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    s.bind((ifname, 3))
    s.setblocking(False)
    return s


def forward(a: int, b: int, read: object, write: object, stop: threading.Event) -> None:
    """Move frames (vnet header included) a <-> b until `stop`."""
    poll = select.poll()
    poll.register(a, select.POLLIN)
    poll.register(b, select.POLLIN)
    peer = {a: b, b: a}
    while not stop.is_set():
        for fd, _ in poll.poll(200):
            for _ in range(64):
                try:
                    data = read(fd)  # type: ignore[operator]
                except BlockingIOError:
                    break
                write(peer[fd], data)  # type: ignore[operator]


def run_once(mode: str, seconds: int) -> float:
    run = secrets.token_hex(2)
    a, m, b = (f"cjbiop{run}-{n}" for n in "amb")
    try:
        for n in (a, m, b):
            sh("ip", "netns", "add", n)
        sh("ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "pa", "netns", m)
        sh("ip", "-n", b, "link", "add", "eth0", "type", "veth", "peer", "pb", "netns", m)
        sh("ip", "-n", a, "addr", "add", "10.97.0.1/24", "dev", "eth0")
        sh("ip", "-n", b, "addr", "add", "10.97.0.2/24", "dev", "eth0")
        for n, link in ((a, "eth0"), (b, "eth0"), (m, "pa"), (m, "pb")):
            sh("ip", "-n", n, "link", "set", link, "up")
        stop = threading.Event()
        result: dict[str, float] = {}

        def middle() -> None:
            enter(m)  # this thread only
            for link in ("pa", "pb"):
                sh("ethtool", "-K", link, "gro", "on")
            if mode == "packet-vnet":
                socks = {s.fileno(): s for s in (open_packet("pa"), open_packet("pb"))}
                buf = bytearray(1 << 17)
                view = memoryview(buf)

                def read(fd: int) -> memoryview:
                    return view[: socks[fd].recv_into(buf)]

                def write(fd: int, data: memoryview) -> None:
                    socks[fd].send(data)

                fa, fb = list(socks)
            else:
                fa, fb = open_tap("ta"), open_tap("tb")
                for src, dst in (("pa", "ta"), ("ta", "pa"), ("pb", "tb"), ("tb", "pb")):
                    sh("ip", "link", "set", src, "up")
                    sh("tc", "qdisc", "replace", "dev", src, "clsact")
                    sh("tc", "filter", "add", "dev", src, "ingress", "protocol", "all", "u32",
                       "match", "u32", "0", "0", "action", "mirred", "egress", "redirect",
                       "dev", dst)  # fmt: skip

                def read(fd: int) -> bytes:  # type: ignore[misc]
                    return os.read(fd, 1 << 17)

                write = os.write  # type: ignore[assignment]
            ready.set()
            forward(fa, fb, read, write, stop)

        ready = threading.Event()
        thread = threading.Thread(target=middle, daemon=True)
        thread.start()
        ready.wait(10)
        server = subprocess.Popen(
            ["ip", "netns", "exec", b, "iperf3", "-s", "-1"], stdout=subprocess.DEVNULL
        )
        time.sleep(0.5)
        out = subprocess.run(
            ["ip", "netns", "exec", a, "iperf3", "-c", "10.97.0.2", "-t", str(seconds), "-J"],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            check=False,
        )
        server.wait(10)
        stop.set()
        thread.join(5)
        result["mbit"] = json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6
        return result["mbit"]
    finally:
        for n in (a, m, b):
            subprocess.run(["ip", "netns", "del", n], capture_output=True, check=False)


RING_BLOCK, RING_BLOCKS = 1 << 20, 16
PACKET_VERSION, PACKET_RX_RING, TPACKET_V3 = 10, 5, 2
TP_STATUS_USER = 1


def read_recv(sock: socket.socket, seconds: float) -> int:
    buf = bytearray(1 << 17)
    n, end = 0, time.monotonic() + seconds
    poll = select.poll()
    poll.register(sock, select.POLLIN)
    while time.monotonic() < end:
        poll.poll(100)
        for _ in range(256):
            try:
                sock.recv_into(buf)
            except BlockingIOError:
                break
            n += 1
    return n


def read_ring(sock: socket.socket, seconds: float) -> int:
    """TPACKET_V3: the kernel fills 1 MiB blocks; one poll per block, no syscall per frame."""
    sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
    # tpacket_req3: block size/count, frame size/count, retire timeout (ms), priv, features
    req = struct.pack("7I", RING_BLOCK, RING_BLOCKS, RING_BLOCK, RING_BLOCKS, 10, 0, 0)
    sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
    ring = mmap.mmap(sock.fileno(), RING_BLOCK * RING_BLOCKS)
    poll = select.poll()
    poll.register(sock, select.POLLIN)
    n, block, end = 0, 0, time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            base = block * RING_BLOCK
            # tpacket_block_desc: version, offset_to_priv, then block_status, num_pkts, first
            status, count, first = struct.unpack_from("3I", ring, base + 8)
            if not status & TP_STATUS_USER:
                poll.poll(100)
                continue
            offset = base + first
            for _ in range(count):
                # tpacket3_hdr: tp_next_offset, sec, nsec, snaplen, len, status, mac, net
                next_offset, _s, _ns, _snap, _len, _st, mac, _net = struct.unpack_from(
                    "6I2H", ring, offset
                )
                ring[offset + mac : offset + mac + 14]  # touch the frame, as a reader would
                n += 1
                offset += next_offset
            struct.pack_into("I", ring, base + 8, 0)  # TP_STATUS_KERNEL: block back
            block = (block + 1) % RING_BLOCKS
    finally:
        ring.close()
    return n


def rx_once(mode: str, seconds: int) -> tuple[float, float]:
    run = secrets.token_hex(2)
    a, b = f"cjbiop{run}-a", f"cjbiop{run}-b"
    try:
        for n in (a, b):
            sh("ip", "netns", "add", n)
        sh("ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "eth0", "netns", b)
        sh("ip", "-n", a, "addr", "add", "10.96.0.1/24", "dev", "eth0")
        sh("ip", "-n", b, "addr", "add", "10.96.0.2/24", "dev", "eth0")
        for n in (a, b):
            sh("ip", "-n", n, "link", "set", "eth0", "up")
        got: dict[str, int] = {}

        def reader() -> None:
            enter(b)
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
            sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
            sock.bind(("eth0", 3))
            sock.setblocking(False)
            with sock:
                got["n"] = (read_ring if mode == "ring" else read_recv)(sock, seconds)

        thread = threading.Thread(target=reader)
        thread.start()
        sh("ip", "netns", "exec", b, "iperf3", "-s", "-D", "-1", "-p", "5299")
        time.sleep(0.3)
        out = subprocess.run(
            ["ip", "netns", "exec", a, "iperf3", "-c", "10.96.0.2", "-p", "5299", "-u",
             "-l", "64", "-b", "0", "-t", str(seconds), "-J"],
            capture_output=True, text=True, timeout=seconds + 30, check=False,
        )  # fmt: skip
        thread.join(seconds + 10)
        sent = json.loads(out.stdout)["end"]["sum"]["packets"]
        return got.get("n", 0) / seconds, sent / seconds
    finally:
        for n in (a, b):
            subprocess.run(["ip", "netns", "del", n], capture_output=True, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--rx", action="store_true", help="the receive-only ring probe")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    if args.rx:
        for _ in range(args.runs):
            for mode in ("recv", "ring"):
                read, sent = rx_once(mode, args.seconds)
                print(f"{mode:5} read {read:9.0f} frames/s of {sent:9.0f} sent (64-byte UDP)")
        return 0
    results: dict[str, list[float]] = {"packet-vnet": [], "tap-vnet": []}
    for _ in range(args.runs):  # interleaved, so both modes see the same noise
        for mode in results:
            results[mode].append(run_once(mode, args.seconds))
    for mode, runs in results.items():
        print(f"{mode:12} " + " ".join(f"{r:8.0f}" for r in runs) + "  Mbit/s (Python forwarder)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
