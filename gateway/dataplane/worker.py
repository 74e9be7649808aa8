"""The per-tenant translator worker: AF_PACKET sockets on its ports, driven by asyncio.

Why AF_PACKET and not tap: the ports already exist as kernel links (a VXLAN device, veths);
a tap would need one more hop through a bridge or a tc redirect per direction. AF_PACKET
reads the link directly (packet_io.py opens the sockets).

Two IO modes (config `userspace_io`):
  TenantWorker      "packet": offloads off on every port, so each frame read is a complete
                    wire frame; one frame per recv, about 70k frames/s in Python.
  VnetTenantWorker  "packet-vnet": PACKET_VNET_HDR with offloads on; GRO hands TCP over as
                    64 KB super-frames, translated once each (gateway/xlat/gso.py), and the
                    kernel segments them again on output.
Both read into one preallocated buffer (recv_into: no 64 KB allocation per frame) and
drain at most BATCH frames per wakeup so one busy port cannot starve the others. The
gateway gives all its workers the same buffer (`RxBuffer`): they run on one loop thread and
each drain is done with the buffer before it returns, so one 128 KiB buffer serves every
tenant instead of one per tenant (12.5 MiB of resident memory at 100 tenants).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Mapping

from cjb.gateway.dataplane.lan_guard import LanGuard
from cjb.gateway.dataplane.packet_io import (
    PACKET_OUTGOING,
    RX_BUFFER,
    ignores_outgoing,
    kernel_drops,
    open_port,
)
from cjb.gateway.dataplane.router import FrameRouter, Port, RouterCounters, VnetFrameRouter
from cjb.gateway.xlat import Translator
from cjb.gateway.xlat.gso import VNET_HDR_LEN, VnetTranslator

BATCH = 256  # frames read per wakeup before yielding to the loop
ERROR_LOG_INTERVAL = 10.0  # seconds: at most one log line about data-path errors per worker
# Drops that mean a bug, not bad input: the translator raised, or the router around it did.
_BUG_DROPS = ("internal-error", "worker-error")

log = logging.getLogger("cjb.gateway.worker")


class ErrorReporter:
    """Logs data-path exceptions at a bounded rate: at most one line per `interval`, with
    how many happened since the last line and the last one's type and message (the
    router's `last_error`). A flood of bad frames cannot flood the journal, and no
    exception goes unreported for longer than `interval` while frames keep coming."""

    def __init__(
        self,
        label: str,
        interval: float = ERROR_LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.interval = interval
        self._clock = clock
        self.reported = 0
        self.lines = 0
        self._quiet_until = float("-inf")

    def check(self, counters: RouterCounters) -> None:
        total = sum(counters.drops.get(name, 0) for name in _BUG_DROPS)
        if total == self.reported:
            return
        now = self._clock()
        if now < self._quiet_until:
            return
        log.error(
            "%s: %d data-path exception(s) since the last report (frames dropped, counted "
            "as internal-error/worker-error); last: %s",
            self.label,
            total - self.reported,
            counters.last_error,
        )
        self.reported = total
        self.lines += 1
        self._quiet_until = now + self.interval


class RxBuffer:
    """A receive buffer that workers on the same loop thread may share (never across
    threads: a drain overwrites it)."""

    def __init__(self) -> None:
        self.data = bytearray(RX_BUFFER)
        self.view = memoryview(self.data)


class TenantWorker:
    def __init__(
        self,
        router: FrameRouter,
        sockets: Mapping[Port, socket.socket],
        rx: RxBuffer | None = None,
        label: str = "worker",
    ) -> None:
        self.router = router
        self.sockets = dict(sockets)
        self.errors = ErrorReporter(label)
        self._loop: asyncio.AbstractEventLoop | None = None
        rx = rx or RxBuffer()
        self._buffer = rx.data
        self._view = rx.view
        # Sockets the kernel keeps our own frames from: plain recv_into, no address tuple
        # to build per frame just to check its packet type.
        self._no_outgoing = {p for p, s in self.sockets.items() if ignores_outgoing(s)}

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for port, sock in self.sockets.items():
            loop.add_reader(sock.fileno(), self._drain_and_report, port, sock)

    def _drain_and_report(self, port: Port, sock: socket.socket) -> None:
        self._drain(port, sock)
        self.errors.check(self.router.counters)  # per batch, not per frame

    def stop(self) -> None:
        for sock in self.sockets.values():
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self.sockets.clear()

    def poll_kernel_drops(self) -> None:
        """Count frames the kernel dropped before the worker saw them: the socket's queue
        was full (the worker fell behind), or, with vnet headers, a GSO type a vnet header
        cannot describe. drops["rx-kernel-<port>"]; called with each status snapshot."""
        for port, sock in self.sockets.items():
            try:
                dropped = kernel_drops(sock)
            except OSError:
                continue
            if dropped:
                self.router.counters.drops[f"rx-kernel-{port.value}"] += dropped

    def _recv(self, port: Port, sock: socket.socket) -> int:
        """Bytes read into the buffer; 0 when there is nothing (more) to read now."""
        counters = self.router.counters
        check_type = port not in self._no_outgoing
        while True:
            try:
                if check_type:
                    n, addr = sock.recvfrom_into(self._buffer)
                    if addr[2] == PACKET_OUTGOING:
                        continue
                else:
                    n = sock.recv_into(self._buffer)
            except (BlockingIOError, InterruptedError):
                return 0
            except OSError as exc:  # e.g. ENETDOWN while a link is recreated
                counters.drops[f"rx-error-{port.value}"] += 1
                counters.last_error = f"recv on {port.value}: {exc.strerror}"
                return 0
            if n >= RX_BUFFER:  # larger than any frame the kernel should hand us
                counters.drops[f"rx-truncated-{port.value}"] += 1
                continue
            return n

    def _drain(self, port: Port, sock: socket.socket) -> None:
        route, view = self.router.route, self._view
        for _ in range(BATCH):
            n = self._recv(port, sock)
            if not n:
                return
            for out_port, out in route(port, bytes(view[:n])):
                target = self.sockets.get(out_port)
                if target is None:
                    self.router.counters.drops[f"no-port-{out_port.value}"] += 1
                    continue
                try:
                    target.send(out)
                except OSError as exc:
                    self.router.send_failed(out_port, exc)
                else:
                    self.router.sent(out_port, out)


class VnetTenantWorker(TenantWorker):
    """The same worker on PACKET_VNET_HDR sockets: a vnet header before every frame."""

    router: VnetFrameRouter

    def __init__(
        self,
        router: VnetFrameRouter,
        sockets: Mapping[Port, socket.socket],
        rx: RxBuffer | None = None,
        label: str = "worker",
    ) -> None:
        super().__init__(router, sockets, rx, label)

    def _drain(self, port: Port, sock: socket.socket) -> None:
        router, view = self.router, self._view
        counters = router.counters
        for _ in range(BATCH):
            n = self._recv(port, sock)
            if not n:
                return
            if n < VNET_HDR_LEN:
                counters.drops[f"rx-short-{port.value}"] += 1
                continue
            # The views point into the receive buffer: everything is sent before the next
            # recv overwrites it.
            for out_port, vnet, parts in router.route_vnet(
                port, view[:VNET_HDR_LEN], view[VNET_HDR_LEN:n]
            ):
                self._send(out_port, vnet, parts)

    def _send(
        self, port: Port, vnet: bytes | memoryview, parts: tuple[bytes | memoryview, ...]
    ) -> None:
        counters = self.router.counters
        target = self.sockets.get(port)
        if target is None:
            counters.drops[f"no-port-{port.value}"] += 1
            return
        try:
            if len(parts) == 1 and type(vnet) is bytes:
                # One wire frame: joining 10 bytes is cheaper than sendmsg's iovec.
                sent = target.send(vnet + parts[0])
            else:  # a super-frame in pieces: no 64 KB copy in Python
                sent = target.sendmsg([vnet, *parts])
        except OSError as exc:
            self.router.send_failed(port, exc)
        else:
            tx = counters.ports[port]
            tx.tx_frames += 1
            tx.tx_bytes += sent - VNET_HDR_LEN


def open_worker(
    translator: Translator,
    native: bool,
    names: Mapping[Port, str],
    userspace_io: str,
    rx: RxBuffer | None = None,
    guard: LanGuard | None = None,
) -> TenantWorker:
    """A worker for one tenant's ports in the given IO mode (config `userspace_io`);
    raises OSError when a port cannot be opened (no socket is left open then). `rx`: a
    receive buffer shared with the other workers of this loop thread (default: its own).
    `guard`: what from the tunnel is dropped (counted) before the translator
    (lan_guard.py)."""
    vnet = userspace_io == "packet-vnet"
    sockets: dict[Port, socket.socket] = {}
    try:
        for port, name in names.items():
            sockets[port] = open_port(name, vnet=vnet)
    except OSError:
        for sock in sockets.values():
            sock.close()
        raise
    label = f"worker on {names.get(Port.SERVICE, '?')}"  # the tenant's service link
    if vnet:
        router = VnetFrameRouter(VnetTranslator(translator), native, guard)
        return VnetTenantWorker(router, sockets, rx, label)
    return TenantWorker(FrameRouter(translator, native, guard), sockets, rx, label)
