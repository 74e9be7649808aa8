"""`cjb service …`: the service host's reference multi-tenant server, PROXY v2 front, the
DNS example, and configuration snippets for stock nginx/Apache/HAProxy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cjb.service.errors import ServiceError

if TYPE_CHECKING:
    from cjb.service.tenancy import Tenancy


def _setup_logging(access_log: str | None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if access_log:
        handler = logging.FileHandler(access_log)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access = logging.getLogger("cjb.service.access")
        access.addHandler(handler)
        access.propagate = False


def _run(main: Coroutine[Any, Any, None]) -> None:
    async def runner() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await main

    asyncio.run(runner())


def _tenancy(directory: str) -> Tenancy:
    from cjb.service.tenancy import Tenancy

    return Tenancy.open(directory)


_directory_option = click.option(
    "--directory",
    "directory",
    required=True,
    type=click.Path(dir_okay=False),
    help="Tenant directory JSON file published by the gateway (watched for changes).",
)


@click.group()
def service() -> None:
    """Service-host tools: the multi-tenant reference app and its PROXY v2 front."""


@service.command()
@_directory_option
@click.option("--port", default=80, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--docroot",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder holding one sub-folder per tenant (DOCROOT/<tenant>/).",
)
@click.option(
    "--bind",
    "bind",
    default="::",
    show_default=True,
    help="Listen address (IPv6-only socket for IPv6; fe80::…%IF is accepted).",
)
@click.option(
    "--proxy-protocol",
    is_flag=True,
    help="Expect a PROXY v2 header and take the tenant from its CJB TLV. "
    "Only for a listener that nothing but the front can reach.",
)
@click.option(
    "--access-log",
    type=click.Path(dir_okay=False),
    help="Write access-log JSON lines to this file instead of stderr.",
)
@click.option(
    "--request-timeout",
    default=10.0,
    show_default=True,
    type=float,
    help="Seconds a client has to send a complete request head.",
)
def serve(
    directory: str,
    port: int,
    docroot: Path,
    bind: str,
    proxy_protocol: bool,
    access_log: str | None,
    request_timeout: float,
) -> None:
    """Serve each tenant its own document root, on one [::]:PORT socket."""
    try:
        from cjb.service.http_server import ServerConfig
        from cjb.service.http_server import serve as serve_http
    except ModuleNotFoundError as exc:
        raise click.ClickException(
            f"{exc.name} is missing: install the service extra (pip install 'cjb[service]')"
        ) from None

    _setup_logging(access_log)
    try:
        tenancy = _tenancy(directory)
        config = ServerConfig(
            docroot=docroot, proxy_protocol=proxy_protocol, request_timeout=request_timeout
        )
        _run(serve_http(tenancy, config, bind, port))
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None


@service.command()
@_directory_option
@click.option("--listen-port", required=True, type=click.IntRange(0, 65535))
@click.option("--bind", "bind", default="::", show_default=True, help="Listen address.")
@click.option(
    "--upstream",
    required=True,
    metavar="HOST:PORT",
    help="The app to forward to, e.g. [::1]:8080 (it must accept PROXY v2).",
)
@click.option(
    "--source-address",
    type=click.Choice(["tenant-unique", "link-local"]),
    default="tenant-unique",
    show_default=True,
    help="PROXY source: the client's tenant-unique address (fd<tenant /64>::<IPv4>; for "
    "servers that only read addresses), or its fe80:: address, the same in every tenant "
    "(only for apps that read CJB's tenant TLVs).",
)
def front(directory: str, listen_port: int, bind: str, upstream: str, source_address: str) -> None:
    """Accept on the tenant links; forward to UPSTREAM with a PROXY v2 header naming the tenant."""
    from cjb.service.aio import parse_hostport
    from cjb.service.front import SOURCE_ADDRESSES, FrontConfig, run_front

    _setup_logging(None)
    source = next(s for s in SOURCE_ADDRESSES if s == source_address)
    try:
        host, port = parse_hostport(upstream)
        tenancy = _tenancy(directory)
        _run(run_front(tenancy, FrontConfig(host, port, source=source), bind, listen_port))
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None


@service.command()
@_directory_option
@click.option("--port", default=53, show_default=True, type=click.IntRange(0, 65535))
@click.option("--bind", "bind", default="::", show_default=True, help="Listen address (IPv6).")
def dns(directory: str, port: int, bind: str) -> None:
    """A multi-tenant DNS responder on one UDP socket (the framework's UDP example):
    whoami.cjb TXT names the asking tenant and client, service.cjb A its service address."""
    from cjb.service.dns_whoami import serve_dns

    _setup_logging(None)
    try:
        _run(serve_dns(_tenancy(directory), bind, port))
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None


@service.command()
@click.argument("server", type=click.Choice(["nginx", "apache", "haproxy"]))
@_directory_option
@click.option(
    "--listen",
    default="[::1]:8080",
    show_default=True,
    metavar="HOST:PORT",
    help="Where the server listens for the front (keep it on loopback).",
)
@click.option(
    "--docroot",
    default="/var/www/cjb",
    show_default=True,
    help="nginx/apache: the folder with one sub-folder per tenant (DOCROOT/<tenant>/).",
)
@click.option(
    "--trusted",
    multiple=True,
    metavar="ADDRESS",
    help="nginx: address the front connects from (repeatable; default ::1 and 127.0.0.1).",
)
@click.option(
    "--upstream",
    "upstreams",
    multiple=True,
    metavar="[TENANT=]HOST:PORT",
    help="haproxy: the server of a tenant's backend (repeatable); a bare HOST:PORT serves "
    "every tenant not named.",
)
def config(
    server: str,
    directory: str,
    listen: str,
    docroot: str,
    trusted: tuple[str, ...],
    upstreams: tuple[str, ...],
) -> None:
    """Print the snippet that makes stock SERVER serve each tenant its own site behind
    `cjb service front` (tenant by the PROXY source's tenant-unique prefix)."""
    from cjb.service.directory import parse_directory
    from cjb.service.server_configs import SnippetOptions, parse_upstreams, snippet
    from cjb.service.watch import read_bounded

    try:
        tenants = parse_directory(read_bounded(directory), directory)
        per_tenant, default = parse_upstreams(upstreams)
        options = SnippetOptions(
            source=directory,
            listen=listen,
            docroot=docroot.rstrip("/") or "/",
            trusted=trusted or ("::1", "127.0.0.1"),
            upstreams=per_tenant,
            default_upstream=default,
        )
        click.echo(snippet(server, tenants, options), nl=False)
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
