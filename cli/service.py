"""`cjb service …`: the service host's reference multi-tenant server and PROXY v2 front."""

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
def front(directory: str, listen_port: int, bind: str, upstream: str) -> None:
    """Accept on the tenant links; forward to UPSTREAM with a PROXY v2 header naming the tenant."""
    from cjb.service.aio import parse_hostport
    from cjb.service.front import FrontConfig, run_front

    _setup_logging(None)
    try:
        host, port = parse_hostport(upstream)
        tenancy = _tenancy(directory)
        _run(run_front(tenancy, FrontConfig(host, port), bind, listen_port))
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
