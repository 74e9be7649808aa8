"""The per-tenant translator worker: AF_PACKET sockets on its ports, driven by asyncio.

Why AF_PACKET and not tap: the ports already exist as kernel links (a VXLAN device, veths);
a tap would need one more hop through a bridge or a tc redirect per direction. AF_PACKET
reads the link directly. Frames we send ourselves come back as PACKET_OUTGOING and are
skipped. Offloads are off on every port (see cjb.common.netlink.offload), so each frame read
is a complete wire frame; we did not need PACKET_AUXDATA.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping

from cjb.gateway.dataplane.router import FrameRouter, Port

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
BATCH = 256  # frames read per wakeup before yielding to the loop
RCVBUF = 4 << 20


def open_port(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    sock.bind((ifname, ETH_P_ALL))
    sock.setblocking(False)
    return sock


class TenantWorker:
    def __init__(self, router: FrameRouter, sockets: Mapping[Port, socket.socket]) -> None:
        self.router = router
        self.sockets = dict(sockets)
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for port, sock in self.sockets.items():
            loop.add_reader(sock.fileno(), self._drain, port, sock)

    def stop(self) -> None:
        for sock in self.sockets.values():
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self.sockets.clear()

    def _drain(self, port: Port, sock: socket.socket) -> None:
        for _ in range(BATCH):
            try:
                frame, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ENETDOWN while a link is recreated
                self.router.counters.drops[f"rx-error-{port.value}"] += 1
                self.router.counters.last_error = f"recv on {port.value}: {exc.strerror}"
                return
            if addr[2] == PACKET_OUTGOING:
                continue
            for out_port, out in self.router.route(port, frame):
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
