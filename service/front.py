"""A tiny PROXY v2 front: keeps the tenant for apps that only see a proxy's address.

Accepts on the tenant links, resolves the tenant from the scope id, connects to the upstream
app, sends one PROXY v2 header (original addresses + CJB tenant/interface TLVs), then copies
bytes both ways with half-close. Connections from an unknown tenant are closed at once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from cjb.service import logfmt, proxy_v2
from cjb.service.aio import ConnectionLimit, serve_tenancy
from cjb.service.resolve import Known, split_sockaddr
from cjb.service.tenancy import Tenancy

CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class FrontConfig:
    upstream_host: str
    upstream_port: int
    connect_timeout: float = 5.0
    idle_timeout: float = 300.0
    max_connections: int = 1024


def header_for(result: Known, local_sockaddr: object) -> bytes:
    """The PROXY v2 header for a resolved connection (pure; tested without sockets)."""
    local = split_sockaddr(local_sockaddr)
    dst_host, dst_port = (local[0], local[1]) if local is not None else ("::", 0)
    return proxy_v2.encode(
        proxy_v2.stream6(
            result.peer_host,
            result.peer_port,
            dst_host,
            dst_port,
            proxy_v2.cjb_tlvs(result.tenant, result.ifname),
        )
    )


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, idle: float) -> int:
    total = 0
    while True:
        async with asyncio.timeout(idle):
            data = await src.read(CHUNK)
        if not data:
            break
        dst.write(data)
        total += len(data)
        async with asyncio.timeout(idle):
            await dst.drain()
    if dst.can_write_eof():
        dst.write_eof()
    return total


class Front(ConnectionLimit):
    def __init__(self, tenancy: Tenancy, config: FrontConfig) -> None:
        super().__init__(config.max_connections)
        self.tenancy = tenancy
        self.config = config

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        result = self.tenancy.resolve(writer.get_extra_info("peername"))
        if not isinstance(result, Known):
            logfmt.log(
                logfmt.EVENTS,
                "front_refused",
                peer=result.peer_host,
                ifname=result.ifname,
                reason=result.message,
            )
            return
        cfg = self.config
        try:
            async with asyncio.timeout(cfg.connect_timeout):
                up_reader, up_writer = await asyncio.open_connection(
                    cfg.upstream_host, cfg.upstream_port
                )
        except (OSError, TimeoutError) as exc:
            logfmt.log(
                logfmt.EVENTS,
                "front_upstream_failed",
                tenant=result.tenant,
                error=type(exc).__name__,
            )
            return
        try:
            up_writer.write(header_for(result, writer.get_extra_info("sockname")))
            outcomes = await asyncio.gather(
                _pipe(reader, up_writer, cfg.idle_timeout),
                _pipe(up_reader, writer, cfg.idle_timeout),
                return_exceptions=True,
            )
            errors = [type(o).__name__ for o in outcomes if isinstance(o, BaseException)]
            logfmt.log(
                logfmt.EVENTS,
                "front_closed",
                tenant=result.tenant,
                ifname=result.ifname,
                peer=result.peer_text,
                up_bytes=outcomes[0],
                down_bytes=outcomes[1],
                errors=errors or None,
            )
        finally:
            up_writer.close()


async def run_front(tenancy: Tenancy, config: FrontConfig, host: str, port: int) -> None:
    """Run the front until cancelled."""
    await serve_tenancy(
        Front(tenancy, config).handle,
        tenancy,
        host,
        port,
        app="front",
        upstream=f"{config.upstream_host}:{config.upstream_port}",
    )
