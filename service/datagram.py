"""A UDP socket that answers from the address it was asked on (IPV6_PKTINFO, RFC 3542 §6).

A server on ``[::]:port`` receives every tenant's datagrams on one socket. Its reply must
leave with the very source address the request was sent to: the tenant's client asked
the service address (``fe80::c0a8:64`` = ``192.168.0.100`` after translation) and drops
an answer from any other address. Left to itself the kernel picks the source by
RFC 6724 address selection, e.g. a second service address ``fe80::c0a8:b`` (192.168.0.11) on
the same link that shares a longer prefix with the client. So the socket asks for
IPV6_RECVPKTINFO, and each reply carries the request's destination and interface in an
IPV6_PKTINFO control message; the peer's scope id sends it out of the right link only.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from cjb.service.aio import sockaddr_for
from cjb.service.errors import AddressError

MAX_DATAGRAM = 65535
# struct in6_pktinfo { struct in6_addr ipi6_addr; unsigned int ipi6_ifindex; } (RFC 3542 §6.1)
_PKTINFO = struct.Struct("=16sI")
_CMSG_SPACE = socket.CMSG_SPACE(_PKTINFO.size)


@dataclass(frozen=True, slots=True)
class Datagram:
    data: bytes
    peer: tuple[str, int, int, int]  # the sender's AF_INET6 sockaddr (scope id = its link)
    local: bytes | None  # the packed destination address it was sent to, when known
    ifindex: int
    truncated: bool


def udp_socket(host: str, port: int) -> socket.socket:
    """A bound, non-blocking IPv6-only UDP socket that reports each datagram's destination."""
    family, sockaddr = sockaddr_for(host, port)
    if family != socket.AF_INET6:
        raise AddressError(f"{host!r}: tenant services listen on IPv6 (the tenant links)")
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        sock.bind(sockaddr)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise AddressError(f"cannot bind UDP [{host}]:{port}: {exc.strerror}") from None
    return sock


def receive(sock: socket.socket) -> Datagram:
    """One datagram (raises BlockingIOError when none is waiting)."""
    data, ancillary, flags, peer = sock.recvmsg(MAX_DATAGRAM, _CMSG_SPACE)
    local, ifindex = None, 0
    for level, kind, payload in ancillary:
        is_pktinfo = level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO
        if is_pktinfo and len(payload) >= _PKTINFO.size:
            local, ifindex = _PKTINFO.unpack_from(payload)
    return Datagram(data, peer, local, ifindex, bool(flags & socket.MSG_TRUNC))


def reply(sock: socket.socket, request: Datagram, data: bytes) -> None:
    """Send `data` to the sender of `request`, from the address the request went to."""
    ancillary = []
    if request.local is not None:
        info = _PKTINFO.pack(request.local, request.ifindex)
        ancillary.append((socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info))
    sock.sendmsg([data], ancillary, 0, request.peer)
