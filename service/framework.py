"""Write a tenant-aware TCP or UDP service in a few lines (asyncio or blocking).

The framework listens on ``[::]:port`` (every tenant link at once), works out the tenant of
each connection or datagram from its scope id and the tenant directory, refuses peers that
are not a known tenant (logged, never handed to you), keeps watching the directory, and
gives your handler a `Client`::

    from cjb.service.framework import serve_tcp

    async def hello(client, reader, writer):
        writer.write(f"hello {client.tenant}, you are {client.ipv4}\\n".encode())

    asyncio.run(serve_tcp(hello, 7000, directory="/run/cjb/tenants.json"))

- `serve_tcp(handler, port)`: ``await handler(client, reader, writer)``; the connection is
  closed when it returns. `serve_udp(handler, port)`: ``handler(client, data)`` returns the
  reply bytes (or None; it may be async). The reply goes back to that client only, from the
  address it asked (`cjb.service.datagram`).
- `run_tcp` / `run_udp`: the same for blocking code; a TCP handler gets
  ``(client, sock)`` in a thread of its own, and both stop when `stop` (a threading.Event)
  is set.

Full guide with a runnable example: docs/applications.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import select
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from cjb.service import datagram, logfmt
from cjb.service.aio import (
    ConnectionLimit,
    listen_socket,
    poll_and_log,
    serve_tenancy,
    watch_directory,
)
from cjb.service.directory import LinkKind
from cjb.service.resolve import Known, Resolution
from cjb.service.tenancy import Tenancy
from cjb.service.tenant_address import UniqueClient, unique_address

DEFAULT_DIRECTORY = "/run/cjb/tenants.json"
DEFAULT_MAX_CONNECTIONS = 1024


@dataclass(frozen=True, slots=True)
class Client:
    """Who is on the other end: tenant, link, and the client's own address."""

    tenant: str
    ifname: str  # the service host's interface it came in on
    link: LinkKind  # "service" (translated from IPv4) or "native" (IPv6 as is)
    address: IPv6Address  # its link-local address, no zone
    port: int
    scope_id: int

    @classmethod
    def of(cls, known: Known) -> Client:
        host = IPv6Address(known.peer_host)
        return cls(known.tenant, known.ifname, known.link, host, known.peer_port, known.scope_id)

    @property
    def ipv4(self) -> IPv4Address | None:
        """The client's LAN IPv4 address when it came through the translator, else None."""
        return UniqueClient(self.tenant, self.address).ipv4

    @property
    def unique_address(self) -> IPv6Address:
        """An address no other tenant's client has (`cjb.service.tenant_address`)."""
        return unique_address(self.tenant, self.address)

    @property
    def text(self) -> str:
        """``fe80::c0a8:a%tenant1``: the peer as getnameinfo would print it."""
        return f"{self.address}%{self.ifname}"


TcpHandler = Callable[[Client, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
UdpReply = bytes | None
UdpHandler = Callable[[Client, bytes], UdpReply | Awaitable[UdpReply]]
BlockingTcpHandler = Callable[[Client, socket.socket], None]
BlockingUdpHandler = Callable[[Client, bytes], UdpReply]


def _tenancy(tenancy: Tenancy | None, directory: str) -> Tenancy:
    return tenancy if tenancy is not None else Tenancy.open(directory)


def _refused(app: str, result: Resolution) -> None:
    assert not isinstance(result, Known)
    logfmt.log(
        logfmt.EVENTS,
        "refused",
        app=app,
        peer=result.peer_host,
        ifname=result.ifname,
        reason=result.message,
    )


def _failed(app: str, client: Client, exc: BaseException) -> None:
    logfmt.log(
        logfmt.EVENTS,
        "handler_failed",
        logging.WARNING,
        app=app,
        tenant=client.tenant,
        peer=client.text,
        error=f"{type(exc).__name__}: {exc}",
    )


class _TcpService(ConnectionLimit):
    def __init__(self, handler: TcpHandler, tenancy: Tenancy, app: str, limit: int) -> None:
        super().__init__(limit)
        self._handler = handler
        self._tenancy = tenancy
        self._app = app

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        result = self._tenancy.resolve(writer.get_extra_info("peername"))
        if not isinstance(result, Known):
            _refused(self._app, result)
            return
        client = Client.of(result)
        try:
            await self._handler(client, reader, writer)
            with contextlib.suppress(ConnectionError, TimeoutError):
                await writer.drain()
        except (ConnectionError, TimeoutError):
            pass  # the client went away: nothing to report
        except Exception as exc:  # a bug in one handler must not end the service
            _failed(self._app, client, exc)


async def serve_tcp(
    handler: TcpHandler,
    port: int,
    *,
    directory: str = DEFAULT_DIRECTORY,
    tenancy: Tenancy | None = None,
    host: str = "::",
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    app: str = "tcp",
    on_ready: Callable[[], Awaitable[None] | None] | None = None,
    **log_fields: object,
) -> None:
    """Serve `handler` on [host]:port until cancelled (see the module docstring);
    `log_fields` go into the "listening" log line."""
    tenancy = _tenancy(tenancy, directory)
    service = _TcpService(handler, tenancy, app, max_connections)
    await serve_tenancy(
        service.handle, tenancy, host, port, app=app, on_ready=on_ready, **log_fields
    )


class _UdpCore:
    """One datagram in, at most one reply out; the tenant resolved, failures logged."""

    def __init__(self, tenancy: Tenancy, app: str) -> None:
        self.tenancy = tenancy
        self.app = app

    def client(self, request: datagram.Datagram) -> Client | None:
        if request.truncated:
            return None  # over 64 KiB cannot be a valid request of ours: drop it
        result = self.tenancy.resolve(request.peer)
        if not isinstance(result, Known):
            _refused(self.app, result)
            return None
        return Client.of(result)

    def send(self, sock: socket.socket, request: datagram.Datagram, reply: object) -> None:
        if isinstance(reply, bytes | bytearray) and reply:
            with contextlib.suppress(OSError):  # e.g. the tenant link went away meanwhile
                datagram.reply(sock, request, bytes(reply))


async def serve_udp(
    handler: UdpHandler,
    port: int,
    *,
    directory: str = DEFAULT_DIRECTORY,
    tenancy: Tenancy | None = None,
    host: str = "::",
    app: str = "udp",
    on_ready: Callable[[], Awaitable[None] | None] | None = None,
) -> None:
    """Answer datagrams on [host]:port with `handler` until cancelled; one at a time (an
    async handler is awaited before the next datagram is read)."""
    tenancy = _tenancy(tenancy, directory)
    core = _UdpCore(tenancy, app)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[None] = asyncio.Queue(maxsize=1)
    with datagram.udp_socket(host, port) as sock:
        loop.add_reader(sock.fileno(), _wake, queue)
        watcher = asyncio.create_task(watch_directory(tenancy))
        logfmt.log(logfmt.EVENTS, "listening", app=app, address=f"[{host}]:{port}", proto="udp")
        try:
            if on_ready is not None:
                maybe = on_ready()
                if maybe is not None:
                    await maybe
            while True:
                await queue.get()
                while True:
                    try:
                        request = datagram.receive(sock)
                    except BlockingIOError:
                        break
                    client = core.client(request)
                    if client is None:
                        continue
                    try:
                        answer = handler(client, request.data)
                        if inspect.isawaitable(answer):
                            answer = await answer
                    except Exception as exc:
                        _failed(app, client, exc)
                        continue
                    core.send(sock, request, answer)
        finally:
            watcher.cancel()
            loop.remove_reader(sock.fileno())


def _wake(queue: asyncio.Queue[None]) -> None:
    """The socket is readable: wake the reading loop (once; it drains every datagram)."""
    if queue.empty():
        queue.put_nowait(None)


def _poll_tenancy(tenancy: Tenancy, stop: threading.Event | None) -> float:
    """Poll the directory when due; how long the caller may wait for I/O meanwhile."""
    if tenancy.seconds_until_poll() <= 0:
        poll_and_log(tenancy)
    return min(tenancy.seconds_until_poll(), 0.2 if stop is not None else 1.0)


def run_tcp(
    handler: BlockingTcpHandler,
    port: int,
    *,
    directory: str = DEFAULT_DIRECTORY,
    tenancy: Tenancy | None = None,
    host: str = "::",
    max_connections: int = 64,
    app: str = "tcp",
    stop: threading.Event | None = None,
    ready: threading.Event | None = None,
) -> None:
    """Blocking `serve_tcp`: one thread per connection (at most `max_connections`)."""
    tenancy = _tenancy(tenancy, directory)
    slots = threading.BoundedSemaphore(max_connections)

    def connection(conn: socket.socket, client: Client) -> None:
        try:
            with conn:
                handler(client, conn)
        except OSError:
            pass
        except Exception as exc:
            _failed(app, client, exc)
        finally:
            slots.release()

    with listen_socket(host, port) as sock:
        logfmt.log(logfmt.EVENTS, "listening", app=app, address=f"[{host}]:{port}")
        if ready is not None:
            ready.set()
        while stop is None or not stop.is_set():
            readable, _, _ = select.select([sock], [], [], _poll_tenancy(tenancy, stop))
            if not readable:
                continue
            try:
                conn, peer = sock.accept()
            except BlockingIOError:
                continue
            result = tenancy.resolve(peer)
            if not isinstance(result, Known) or not slots.acquire(blocking=False):
                if not isinstance(result, Known):
                    _refused(app, result)
                conn.close()
                continue
            conn.setblocking(True)
            client = Client.of(result)
            threading.Thread(target=connection, args=(conn, client), daemon=True).start()


def run_udp(
    handler: BlockingUdpHandler,
    port: int,
    *,
    directory: str = DEFAULT_DIRECTORY,
    tenancy: Tenancy | None = None,
    host: str = "::",
    app: str = "udp",
    stop: threading.Event | None = None,
    ready: threading.Event | None = None,
) -> None:
    """Blocking `serve_udp`: one loop, one handler call per datagram."""
    tenancy = _tenancy(tenancy, directory)
    core = _UdpCore(tenancy, app)
    with datagram.udp_socket(host, port) as sock:
        logfmt.log(logfmt.EVENTS, "listening", app=app, address=f"[{host}]:{port}", proto="udp")
        if ready is not None:
            ready.set()
        while stop is None or not stop.is_set():
            readable, _, _ = select.select([sock], [], [], _poll_tenancy(tenancy, stop))
            if not readable:
                continue
            try:
                request = datagram.receive(sock)
            except BlockingIOError:
                continue
            client = core.client(request)
            if client is None:
                continue
            try:
                answer = handler(client, request.data)
            except Exception as exc:
                _failed(app, client, exc)
                continue
            core.send(sock, request, answer)
