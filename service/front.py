"""A tiny PROXY v2 front: keeps the tenant for apps that only see a proxy's address.

Accepts on the tenant links (a `cjb.service.framework` TCP service: the tenant comes from the
scope id, unknown tenants are closed at once), connects to the upstream app, sends one PROXY
v2 header, then copies bytes both ways with half-close.

The header's source address is, by default, the client's **tenant-unique address**
(`cjb.service.tenant_address`: ``fd<tenant /64>::<IPv4>``), so a stock nginx, Apache or
HAProxy that only reads the PROXY source address still tells two tenants' ``192.168.0.10``
apart (`cjb service config` prints their configuration). ``source="link-local"`` sends the
client's own ``fe80::`` address instead, which is the same for every tenant: only for apps
that read the CJB tenant TLVs, which are sent in both modes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from cjb.service import logfmt, proxy_v2
from cjb.service.framework import Client, serve_tcp
from cjb.service.resolve import Known, split_sockaddr
from cjb.service.tenancy import Tenancy

CHUNK = 64 * 1024

SourceAddress = Literal["tenant-unique", "link-local"]
SOURCE_ADDRESSES: tuple[SourceAddress, ...] = ("tenant-unique", "link-local")


@dataclass(frozen=True, slots=True)
class FrontConfig:
    upstream_host: str
    upstream_port: int
    connect_timeout: float = 5.0
    idle_timeout: float = 300.0
    max_connections: int = 1024
    source: SourceAddress = "tenant-unique"


def header_for(
    result: Known | Client, local_sockaddr: object, source: SourceAddress = "tenant-unique"
) -> bytes:
    """The PROXY v2 header for a resolved connection (pure; tested without sockets)."""
    client = Client.of(result) if isinstance(result, Known) else result
    local = split_sockaddr(local_sockaddr)
    dst_host, dst_port = (local[0], local[1]) if local is not None else ("::", 0)
    src = client.unique_address if source == "tenant-unique" else client.address
    return proxy_v2.encode(
        proxy_v2.stream6(
            str(src),
            client.port,
            dst_host,
            dst_port,
            proxy_v2.cjb_tlvs(client.tenant, client.ifname),
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


class Front:
    def __init__(self, config: FrontConfig) -> None:
        self.config = config

    async def forward(
        self, client: Client, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """The framework's TCP handler: one client connection to the upstream and back."""
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
                tenant=client.tenant,
                error=type(exc).__name__,
            )
            return
        try:
            header = header_for(client, writer.get_extra_info("sockname"), cfg.source)
            up_writer.write(header)
            outcomes = await asyncio.gather(
                _pipe(reader, up_writer, cfg.idle_timeout),
                _pipe(up_reader, writer, cfg.idle_timeout),
                return_exceptions=True,
            )
            errors = [type(o).__name__ for o in outcomes if isinstance(o, BaseException)]
            logfmt.log(
                logfmt.EVENTS,
                "front_closed",
                tenant=client.tenant,
                ifname=client.ifname,
                peer=client.text,
                up_bytes=outcomes[0],
                down_bytes=outcomes[1],
                errors=errors or None,
            )
        finally:
            up_writer.close()


async def run_front(tenancy: Tenancy, config: FrontConfig, host: str, port: int) -> None:
    """Run the front until cancelled."""
    await serve_tcp(
        Front(config).forward,
        port,
        tenancy=tenancy,
        host=host,
        max_connections=config.max_connections,
        app="front",
        upstream=f"{config.upstream_host}:{config.upstream_port}",
        source=config.source,
    )
