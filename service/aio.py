"""Thin asyncio helpers around `Tenancy`: who is on this connection, where to listen."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable

from cjb.service import logfmt
from cjb.service.errors import AddressError
from cjb.service.resolve import Resolution
from cjb.service.tenancy import Tenancy
from cjb.service.watch import Reloaded, ReloadFailed


def tenant_of_writer(tenancy: Tenancy, writer: asyncio.StreamWriter) -> Resolution:
    """The tenant of a stream connection (asyncio.start_server callback's writer)."""
    return tenancy.resolve(writer.get_extra_info("peername"))


def tenant_of_transport(tenancy: Tenancy, transport: asyncio.BaseTransport) -> Resolution:
    """The tenant of a Protocol's transport (connection_made)."""
    return tenancy.resolve(transport.get_extra_info("peername"))


def tenant_of_datagram(tenancy: Tenancy, addr: object) -> Resolution:
    """The tenant of a datagram (DatagramProtocol.datagram_received's `addr`)."""
    return tenancy.resolve(addr)


async def watch_directory(tenancy: Tenancy) -> None:
    """Poll the directory file for ever (run as a task); logs reloads and failures."""
    while True:
        await asyncio.sleep(tenancy.seconds_until_poll())
        poll_and_log(tenancy)


def poll_and_log(tenancy: Tenancy) -> None:
    """Poll the directory file once; log a reload or a failed one."""
    outcome = tenancy.poll()
    if isinstance(outcome, Reloaded):
        logfmt.log(
            logfmt.EVENTS,
            "directory_reloaded",
            path=tenancy.path,
            tenants=len(outcome.directory.entries),
        )
    elif isinstance(outcome, ReloadFailed):
        logfmt.log(logfmt.EVENTS, "directory_reload_failed", message=outcome.message)


def sockaddr_for(
    host: str, port: int
) -> tuple[socket.AddressFamily, tuple[str, int] | tuple[str, int, int, int]]:
    """Family and sockaddr for `host` (IPv4, IPv6, or scoped ``fe80::1%ifname``).

    A scoped address becomes the 4-tuple ``(addr, port, 0, scope_id)``: the ``%ifname``
    string form fails in bind().
    """
    addr, _, zone = host.partition("%")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise AddressError(f"{host!r} is not an IP address") from None
    if not 0 <= port <= 0xFFFF:
        raise AddressError(f"port {port} out of range")
    if ip.version == 4:
        if zone:
            raise AddressError(f"{host!r}: IPv4 addresses have no zone")
        return socket.AF_INET, (str(ip), port)
    scope = 0
    if zone:
        try:
            scope = int(zone) if zone.isdigit() else socket.if_nametoindex(zone)
        except OSError:
            raise AddressError(f"{host!r}: no interface named {zone!r}") from None
    return socket.AF_INET6, (str(ip), port, 0, scope)


def parse_hostport(text: str) -> tuple[str, int]:
    """``[v6addr%zone]:port`` or ``v4addr:port`` -> (host, port)."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not sep or not port_text:
            raise AddressError(f"{text!r}: expected [ADDRESS]:PORT")
    else:
        host, _, port_text = text.rpartition(":")
        if ":" in host:
            raise AddressError(f"{text!r}: write IPv6 addresses as [ADDRESS]:PORT")
    if not host or not port_text.isdigit():
        raise AddressError(f"{text!r}: expected HOST:PORT or [ADDRESS]:PORT")
    return host, int(port_text)


def listen_socket(host: str, port: int, backlog: int = 512) -> socket.socket:
    """A listening TCP socket; IPv6 sockets are IPv6-only (dual stack off)."""
    family, sockaddr = sockaddr_for(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise AddressError(f"cannot listen on [{host}]:{port}: {exc.strerror}") from None
    return sock


class ConnectionLimit:
    """A stream server's connection cap: `handle` closes a connection over `max_connections`
    at once, otherwise runs `connection` and closes it afterwards."""

    def __init__(self, max_connections: int) -> None:
        self._max_connections = max_connections
        self._open = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The `asyncio.start_server` callback."""
        if self._open >= self._max_connections:
            writer.close()
            return
        self._open += 1
        try:
            await self.connection(reader, writer)
        finally:
            self._open -= 1
            writer.close()

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


async def serve_tenancy(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    tenancy: Tenancy,
    host: str,
    port: int,
    *,
    app: str,
    on_ready: Callable[[], Awaitable[None] | None] | None = None,
    **fields: object,
) -> None:
    """Listen on [host]:port with `handle` until cancelled, watching the tenant directory;
    logs one "listening" event (`app`, the address, then `fields`)."""
    server = await asyncio.start_server(handle, sock=listen_socket(host, port))
    watcher = asyncio.create_task(watch_directory(tenancy))
    address = f"[{host}]:{port}"
    logfmt.log(logfmt.EVENTS, "listening", logging.INFO, app=app, address=address, **fields)
    try:
        async with server:
            if on_ready is not None:
                maybe = on_ready()
                if maybe is not None:
                    await maybe
            await server.serve_forever()
    finally:
        watcher.cancel()
