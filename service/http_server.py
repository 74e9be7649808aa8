"""The reference multi-tenant HTTP server: one process, one loop, one docroot per tenant.

HTTP parsing is h11 (sans-IO); this module is the asyncio adapter around it and `site`.
The tenant comes from the connection's scope id, or — with `proxy_protocol` — from the
CJB tenant TLV of a PROXY v2 header sent by `cjb service front`. Answers to a tenant carry
X-CJB-Tenant, X-CJB-Interface and X-CJB-Path (translated or native) headers.

Limits: request head <= `max_header_bytes` (431 beyond), no request body (413), only GET and
HEAD (405), a complete request head within `request_timeout` (408 or a silent close when idle),
writes must drain within `write_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

import h11

from cjb.service import logfmt, proxy_v2, site
from cjb.service.aio import ConnectionLimit, serve_tenancy
from cjb.service.resolve import Known
from cjb.service.tenancy import Tenancy

SERVER_NAME = "cjb-reference/1"
READ_CHUNK = 16 * 1024


@dataclass(frozen=True, slots=True)
class ServerConfig:
    docroot: Path
    proxy_protocol: bool = False
    max_header_bytes: int = 16 * 1024
    request_timeout: float = 10.0
    write_timeout: float = 10.0
    max_requests_per_connection: int = 100
    max_connections: int = 1024


@dataclass(frozen=True, slots=True)
class Refusal:
    """No tenant for this connection: every request on it gets 403 with `message`."""

    message: str
    ifname: str | None
    peer_text: str


Identity = site.Visitor | Refusal


class _Close(Exception):
    """End this connection (after whatever was already sent)."""


class ReferenceServer(ConnectionLimit):
    def __init__(
        self, tenancy: Tenancy, config: ServerConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(config.max_connections)
        self.tenancy = tenancy
        self.config = config
        self._clock = clock

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(_Close, ConnectionError, TimeoutError):
            await self._connection(reader, writer)

    async def _identify(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[Identity, bytes]:
        peername = writer.get_extra_info("peername")
        if not self.config.proxy_protocol:
            result = self.tenancy.resolve(peername)
            if isinstance(result, Known):
                path = site.PATH_OF_LINK[result.link]
                return site.Visitor(result.tenant, result.ifname, result.peer_text, path), b""
            peer = (
                result.peer_host if result.ifname is None else f"{result.peer_host}%{result.ifname}"
            )
            return Refusal(result.message, result.ifname, peer), b""
        buf = bytearray()
        async with asyncio.timeout(self.config.request_timeout):
            while isinstance(parsed := proxy_v2.parse(buf), proxy_v2.NeedMore):
                chunk = await reader.read(proxy_v2.DEFAULT_MAX_LENGTH - len(buf))
                if not chunk:
                    parsed = proxy_v2.Invalid("connection closed inside the PROXY header")
                    break
                buf += chunk
        if isinstance(parsed, proxy_v2.Invalid):
            logfmt.log(
                logfmt.EVENTS, "proxy_header_rejected", peer=str(peername), reason=parsed.reason
            )
            raise _Close
        header = parsed.header
        leftover = bytes(buf[parsed.consumed :])
        ifname = header.ifname
        src = header.src_addr
        # The front's tenant-unique source address: show the client's own link-local one.
        unique = self.tenancy.unique_client(src) if src else None
        if unique is not None:
            src = str(unique.link_local)
        peer = f"{src}%{ifname}" if ifname else str(src)
        tenant = header.tenant
        if header.command is proxy_v2.Command.LOCAL or tenant is None:
            return Refusal(
                "unknown tenant: the PROXY header names no tenant", ifname, peer
            ), leftover
        if self.tenancy.directory.by_tenant(tenant) is None:
            msg = f"unknown tenant {tenant!r} (interface {ifname}): not in the tenant directory"
            return Refusal(msg, ifname, peer), leftover
        # The front resolved the interface on this host: the directory says which link it is.
        binding = self.tenancy.directory.binding(ifname) if ifname else None
        via: site.PathKind | None = (
            site.PATH_OF_LINK[binding.link]
            if binding is not None and binding.entry.tenant == tenant
            else None
        )
        return site.Visitor(tenant, ifname or "?", peer, via), leftover

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        identity, leftover = await self._identify(reader, writer)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.config.max_header_bytes)
        if leftover:
            conn.receive_data(leftover)
        for served in range(1, self.config.max_requests_per_connection + 1):
            started = self._clock()
            try:
                async with asyncio.timeout(self.config.request_timeout):
                    request = await self._next_request(conn, reader)
            except TimeoutError:
                if conn.their_state is h11.IDLE and not conn.trailing_data[0]:
                    return  # idle keep-alive connection: just close
                await self._error(
                    writer, conn, identity, None, 408, "request not received in time", started
                )
                return
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                message = (
                    f"request head larger than {self.config.max_header_bytes} bytes"
                    if status == 431
                    else f"malformed request: {exc}"
                )
                await self._error(writer, conn, identity, None, status, message, started)
                return
            if request is None:
                return
            last = served == self.config.max_requests_per_connection
            if not await self._answer(writer, conn, reader, identity, request, started, last):
                return
            if conn.our_state is h11.MUST_CLOSE or last:
                return
            conn.start_next_cycle()

    async def _next_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> h11.Request | None:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(READ_CHUNK))
            elif isinstance(event, h11.Request):
                return event
            else:  # ConnectionClosed, or PAUSED after a close
                return None

    async def _answer(
        self,
        writer: asyncio.StreamWriter,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        identity: Identity,
        request: h11.Request,
        started: float,
        last: bool,
    ) -> bool:
        """Send the response; False when the connection must close afterwards."""
        method = request.method.decode("ascii", "replace")
        if method not in ("GET", "HEAD"):
            await self._error(
                writer, conn, identity, request, 405, "only GET and HEAD are served", started
            )
            return False
        if any(
            name in (b"content-length", b"transfer-encoding") and value != b"0"
            for name, value in request.headers
        ):
            await self._error(
                writer,
                conn,
                identity,
                request,
                413,
                "GET and HEAD requests must not carry a body",
                started,
            )
            return False
        if isinstance(identity, Refusal):
            reply = site.text_reply(403, identity.message)
        else:
            target = request.target.decode("ascii", "replace")
            reply = await asyncio.to_thread(site.respond, self.config.docroot, identity, target)
        # Consume the (empty) end of the request so the connection can be reused.
        async with asyncio.timeout(self.config.request_timeout):
            while True:
                event = conn.next_event()
                if isinstance(event, h11.EndOfMessage):
                    break
                if event is not h11.NEED_DATA:
                    raise _Close
                conn.receive_data(await reader.read(READ_CHUNK))
        await self._send(writer, conn, identity, request, reply, started, close=last)
        return True

    async def _error(
        self,
        writer: asyncio.StreamWriter,
        conn: h11.Connection,
        identity: Identity,
        request: h11.Request | None,
        status: int,
        message: str,
        started: float,
    ) -> None:
        reply = site.text_reply(status, message)
        # When the state machine cannot send a response here, just close.
        with contextlib.suppress(h11.LocalProtocolError):
            await self._send(writer, conn, identity, request, reply, started, close=True)

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        conn: h11.Connection,
        identity: Identity,
        request: h11.Request | None,
        reply: site.Reply,
        started: float,
        *,
        close: bool,
    ) -> None:
        head_only = request is not None and request.method == b"HEAD"
        headers = [
            ("server", SERVER_NAME),
            ("content-type", reply.content_type),
            ("content-length", str(len(reply.body))),
        ]
        if isinstance(identity, site.Visitor):
            headers += site.identity_headers(identity)
        if close:
            headers.append(("connection", "close"))
        reason = HTTPStatus(reply.status).phrase.encode()
        out = (
            conn.send(h11.Response(status_code=reply.status, headers=headers, reason=reason)) or b""
        )
        if not head_only:
            out += conn.send(h11.Data(data=reply.body)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        writer.write(out)
        self._log(identity, request, reply, 0 if head_only else len(reply.body), started)
        async with asyncio.timeout(self.config.write_timeout):
            await writer.drain()

    def _log(
        self,
        identity: Identity,
        request: h11.Request | None,
        reply: site.Reply,
        sent: int,
        started: float,
    ) -> None:
        visitor = identity if isinstance(identity, site.Visitor) else None
        ifname, peer = identity.ifname, identity.peer_text
        logfmt.log(
            logfmt.ACCESS,
            "access",
            tenant=None if visitor is None else visitor.tenant,
            ifname=ifname,
            path=None if visitor is None else visitor.path,
            peer=peer,
            method=None if request is None else request.method.decode("ascii", "replace"),
            target=None if request is None else request.target.decode("ascii", "replace"),
            status=reply.status,
            bytes=sent,
            ms=round((self._clock() - started) * 1000, 1),
            note=reply.note or None,
            via="proxy" if self.config.proxy_protocol else "scope",
        )


async def serve(
    tenancy: Tenancy,
    config: ServerConfig,
    host: str,
    port: int,
    on_ready: Callable[[], Awaitable[None] | None] | None = None,
) -> None:
    """Run the reference server until cancelled."""
    await serve_tenancy(
        ReferenceServer(tenancy, config).handle,
        tenancy,
        host,
        port,
        app="serve",
        on_ready=on_ready,
        tenants=len(tenancy.directory.entries),
        proxy_protocol=config.proxy_protocol,
    )
