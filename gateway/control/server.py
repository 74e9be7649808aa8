"""`cjb gateway serve`: the control plane's process (one asyncio loop, aiohttp over TLS).

Two listeners: the device surface ([api] listen/port, internet-facing) and the operator
surface ([operator] listen/port, loopback by default; operator API and /metrics). A watcher
re-exports export/desired.json for the data plane whenever the registry's generation moves
(also after changes made by the inventory commands in another process).

TLS: server certificate from the state dir; client certificates are *optional* at the TLS
layer (enrollment has none yet) but, when sent, must chain to our CA, so a certificate from
another CA fails the handshake before any handler runs. Which certificate may use
/v1/device/* (known, unrevoked, unexpired) is checked per request in api.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import secrets
import signal
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from aiohttp import web
from cryptography import x509
from prometheus_client.registry import Collector

from cjb.gateway.control import pki, update_api
from cjb.gateway.control.api import ControlContext, make_app, make_operator_app
from cjb.gateway.control.enroll import Enroller, EnrollmentPolicy
from cjb.gateway.control.export import write_export
from cjb.gateway.control.registry import AuditLimits, Registry
from cjb.gateway.control.settings import Settings, load_settings
from cjb.gateway.control.statedir import StateDir

log = logging.getLogger("cjb.gateway.control")


def tls_context(layout: StateDir) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(layout.server_cert, layout.server_key)
    ctx.load_verify_locations(cafile=str(layout.ca_cert))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def build_context(
    layout: StateDir,
    settings: Settings | None = None,
    clock: Callable[[], float] = time.time,
    random: Callable[[int], bytes] = secrets.token_bytes,
    extra_collectors: Sequence[Collector] = (),
) -> ControlContext:
    layout.require_current()
    settings = settings or load_settings(layout.settings)
    ca_pem = layout.ca_cert.read_text()
    enroller = Enroller(
        EnrollmentPolicy(
            certificate_validity=dt.timedelta(days=settings.enrollment.certificate_days)
        ),
        pki.load_key(layout.ca_key.read_bytes()),
        x509.load_pem_x509_certificate(ca_pem.encode()),
    )
    return ControlContext(
        registry=Registry.open(
            layout.registry,
            clock,
            AuditLimits(settings.audit.max_rows, settings.audit.max_age_days * 86400.0),
        ),
        settings=settings,
        enroller=enroller,
        gateway_wireguard_public_key=layout.wg_public_key(),
        ca_pem=ca_pem,
        clock=clock,
        random=random,
        extra_collectors=extra_collectors,
    )


async def start(
    ctx: ControlContext, layout: StateDir, host: str, port: int, operator: bool = False
) -> tuple[web.AppRunner, int]:
    """Start listening with the device app (or, `operator`, the operator app); returns the
    runner (cleanup() stops it) and the bound port."""
    if operator:
        app = make_operator_app(ctx)
    else:
        app = make_app(ctx)
        # Image updates for devices: their own module and store, in the API's own directory.
        update_api.register(app, layout.api_dir)
    # Handlers are short; do not wait long for idle keep-alive or stalled clients on stop.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=3.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=tls_context(layout), reuse_address=True)
    await site.start()
    bound = int(runner.addresses[0][1]) if runner.addresses else port  # port 0: ephemeral
    return runner, bound


EXPORT_POLL_SECONDS = 0.25


async def keep_exporting(ctx: ControlContext, layout: StateDir, stop: asyncio.Event) -> None:
    """Rewrite export/desired.json whenever the registry's generation moves."""
    written: int | None = None
    while not stop.is_set():
        try:
            gen = await asyncio.to_thread(ctx.registry.generation)
            if gen != written:
                written = await asyncio.to_thread(write_export, ctx.registry, layout.desired)
        except Exception:  # a full disk must not stop the API; say so and retry
            log.exception("cannot write the data plane's export", extra={"fields": {}})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), EXPORT_POLL_SECONDS)


async def serve(
    state_dir: Path,
    host: str | None = None,
    port: int | None = None,
    extra_collectors: Sequence[Collector] = (),
    operator_host: str | None = None,
    operator_port: int | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT. `extra_collectors`: the data plane's metrics hook."""
    layout = StateDir(state_dir)
    ctx = build_context(layout, extra_collectors=extra_collectors)
    host = host if host is not None else ctx.settings.api.listen
    port = port if port is not None else ctx.settings.api.port
    op_host = operator_host if operator_host is not None else ctx.settings.operator.listen
    op_port = operator_port if operator_port is not None else ctx.settings.operator.port
    runner, bound = await start(ctx, layout, host, port)
    op_runner, op_bound = await start(ctx, layout, op_host, op_port, operator=True)
    log.info(
        "serving",
        extra={
            "fields": {
                "listen": host,
                "port": bound,
                "operator_listen": op_host,
                "operator_port": op_bound,
                "pid": os.getpid(),
                "state_dir": str(state_dir),
            }
        },
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    exporter = asyncio.create_task(keep_exporting(ctx, layout, stop))
    try:
        await stop.wait()
    finally:
        await exporter
        await runner.cleanup()
        await op_runner.cleanup()
        ctx.registry.close()
        log.info("stopped", extra={"fields": {"pid": os.getpid()}})
