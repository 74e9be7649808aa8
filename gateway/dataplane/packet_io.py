"""AF_PACKET port sockets for the translator worker, in its two IO modes.

"packet": one wire frame per recv; the ports' offloads are off, so frames are complete.
"packet-vnet": PACKET_VNET_HDR, offloads on: every frame read or written carries a
`virtio_net_hdr` first, so the kernel hands over GRO'd TCP as 64 KB super-frames with a
partial checksum and segments ours on output (gateway/xlat/gso.py). Measured against a
tap with IFF_VNET_HDR it gives the same super-frames without one more hop per direction
(a tap would need a bridge or tc redirect into the existing ports).

Both set PACKET_IGNORE_OUTGOING (Linux 4.20): the frames we send are not queued back to
us, which saves one recv per frame sent; PACKET_OUTGOING is still checked in case the
option is missing.
"""

from __future__ import annotations

import contextlib
import socket
import struct

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4
# Room for ~100 super-frames: a worker that loses the CPU for a few ms must not drop
# (each drop costs TCP a retransmit). SO_RCVBUF is capped by net.core.rmem_max (208 KiB
# by default); the FORCE variants (root, CAP_NET_ADMIN) are not.
RCVBUF = 8 << 20
SNDBUF = 4 << 20
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
# A GRO'd frame is at most 64 KB of IP plus Ethernet; the rest is room to see truncation.
RX_BUFFER = 1 << 17


PACKET_STATISTICS = 6
_STATS = struct.Struct("=II")  # struct tpacket_stats: tp_packets, tp_drops


def kernel_drops(sock: socket.socket) -> int:
    """Frames the kernel dropped for this socket since the last call (its queue was full);
    reading PACKET_STATISTICS resets the kernel's counters."""
    _packets, drops = _STATS.unpack(sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS.size))
    return int(drops)


def ignores_outgoing(sock: socket.socket) -> bool:
    """True when PACKET_IGNORE_OUTGOING is on: the kernel never queues our own frames."""
    try:
        return bool(sock.getsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING))
    except OSError:
        return False


def open_port(ifname: str, vnet: bool = False) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        for force, plain, size in (
            (SO_RCVBUFFORCE, socket.SO_RCVBUF, RCVBUF),
            (SO_SNDBUFFORCE, socket.SO_SNDBUF, SNDBUF),
        ):
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, size)
            except PermissionError:  # not root: what rmem_max/wmem_max allow
                sock.setsockopt(socket.SOL_SOCKET, plain, size)
        with contextlib.suppress(OSError):  # older kernels: the pkttype check covers it
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        if vnet:
            # Must be set before bind; without it super-frames would be unreadable.
            sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        sock.bind((ifname, ETH_P_ALL))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
