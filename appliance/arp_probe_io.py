"""AF_PACKET adapter for the RFC 5227 prober: one raw ARP socket on the LAN bridge."""

from __future__ import annotations

import ipaddress
import random
import select
import socket
import time
from collections.abc import Callable, Sequence

from cjb.appliance.arp_probe import Prober, ProbeState, Timing
from cjb.common.packet.ethernet import ETHERTYPE_ARP


def probe_free_address(
    ifname: str,
    candidates: Sequence[ipaddress.IPv4Address],
    *,
    timing: Timing | None = None,
    mac: bytes | None = None,
    clock: Callable[[], float] = time.monotonic,
    rng: Callable[[], float] | None = None,
    give_up_after: float = 600.0,
) -> Prober:
    """Run the prober on `ifname` until it finds a free address or runs out; return it."""
    if mac is None:
        # /sys follows the mount namespace, not the network one: ask the socket instead.
        mac = _mac_from_socket(ifname)
    prober = Prober(mac, candidates, rng or random.SystemRandom().random, timing or Timing())
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETHERTYPE_ARP)) as sock:
        sock.bind((ifname, ETHERTYPE_ARP))
        sock.setblocking(False)
        start = clock()
        prober.start(start)
        while prober.state is ProbeState.PROBING and clock() - start < give_up_after:
            now = clock()
            for frame in prober.on_timer(now):
                sock.send(frame)
            deadline = prober.next_deadline()
            if deadline is None:
                break
            readable, _, _ = select.select([sock], [], [], max(0.0, deadline - clock()))
            if readable:
                _drain(sock, prober, clock)
    return prober


def _drain(sock: socket.socket, prober: Prober, clock: Callable[[], float]) -> None:
    while True:
        try:
            frame, addr = sock.recvfrom(2048)
        except BlockingIOError:
            return
        if addr[2] == socket.PACKET_OUTGOING:
            continue  # our own probes, looped back to the packet socket
        prober.on_frame(clock(), frame)


def _mac_from_socket(ifname: str) -> bytes:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((ifname, 0))
        raw = s.getsockname()[4]
    return bytes(raw[:6])
