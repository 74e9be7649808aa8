"""The HTTPS API (aiohttp): two applications on two listeners.

`make_app`: the internet-facing device surface, enrollment (nonce, signed request) and the
device endpoints (mTLS). `make_operator_app`: the operator API and /metrics, on their own
listener (gateway.toml [operator], loopback by default); the device listener answers 404 for
them, so neither a credential guess nor a scrape reaches that code from the internet.

Why aiohttp: it is both the HTTP stack and the server, and a handler reaches the TLS session
of its connection directly (`request.transport.get_extra_info("ssl_object")`), so the device
certificate that the TLS layer verified against our CA is in hand without a proxy header;
uvicorn/hypercorn hand ASGI apps the client certificate only through server-specific
extensions. The routes are thin: each parses its body with the protocol's pydantic model,
calls the registry (in a thread: sqlite3 blocks) or a sans-IO core, and maps ControlError
to an ErrorBody in one middleware.

Operator routes (`Authorization: Bearer <token from cjb gateway operator add>`):
  GET  /v1/operator/status                     device counts by state, enrollments, generation
  GET  /v1/operator/tenants[/{name}]           VNI, overlay address, service IPv4, catalog
  PUT  /v1/operator/tenants/{name}/catalog     [CatalogService, ...]; bumps config_version
  GET  /v1/operator/devices[/{serial}]         inventory state, last heartbeat, certificates
  POST /v1/operator/devices/{serial}/revoke    {"reason": "..."}
  GET  /metrics                                Prometheus text format
Rate limits are per source (`ratelimit.source_key` of `request.remote`: IPv4 address or IPv6
/64): put no proxy in front of this API.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client.registry import Collector
from pydantic import BaseModel, ValidationError

from cjb.common.control.protocol import (
    MAX_REQUEST_BODY,
    NONCE_TTL_SECONDS,
    SIGNATURE_HEADER,
    DeviceConfig,
    EnrollRequest,
    EnrollResponse,
    ErrorBody,
    Heartbeat,
    HeartbeatResponse,
    NonceResponse,
    TunnelConfig,
)
from cjb.common.control.service_macs import NATIVE_LINK, SERVICE_LINK, service_mac
from cjb.common.validation import validation_problems
from cjb.gateway.control import metrics, pki
from cjb.gateway.control.catalog import CATALOG, catalog_doc
from cjb.gateway.control.enroll import (
    UNIFORM_REFUSALS,
    DeviceFacts,
    EnrollClaim,
    Enroller,
    LanClaim,
    nonce_refusal,
    uniform_refusal,
)
from cjb.gateway.control.errors import ControlError
from cjb.gateway.control.nonces import NonceStore, NonceVerdict
from cjb.gateway.control.operators import Verifier, split_token
from cjb.gateway.control.ratelimit import RateLimiter, source_key
from cjb.gateway.control.registry import (
    Allocation,
    DeviceRow,
    EnrollmentRecord,
    Registry,
    TenantRow,
)
from cjb.gateway.control.settings import Settings

log = logging.getLogger("cjb.gateway.control")
M = TypeVar("M", bound=BaseModel)


@dataclass
class ControlContext:
    registry: Registry
    settings: Settings
    enroller: Enroller
    gateway_wireguard_public_key: str
    ca_pem: str
    clock: Callable[[], float]
    random: Callable[[int], bytes]
    nonces: NonceStore = field(init=False)
    limiter: RateLimiter = field(init=False)
    enroll_limiter: RateLimiter = field(init=False)
    operator_failures: RateLimiter = field(init=False)
    verifier: Verifier = field(default_factory=Verifier)
    counters: metrics.ApiCounters = field(default_factory=metrics.ApiCounters)
    extra_collectors: Sequence[Collector] = ()

    def __post_init__(self) -> None:
        api, op = self.settings.api, self.settings.operator
        self.nonces = NonceStore(
            NONCE_TTL_SECONDS, api.max_outstanding_nonces, api.nonces_per_source
        )
        self.limiter = RateLimiter(api.nonce_requests_per_second, api.nonce_burst, api.max_sources)
        self.enroll_limiter = RateLimiter(
            api.enroll_requests_per_second, api.enroll_burst, api.max_sources
        )
        self.operator_failures = RateLimiter(
            op.failures_per_second, op.failure_burst, api.max_sources
        )

    @property
    def allocation(self) -> Allocation:
        o = self.settings.overlay
        return Allocation(self.settings.tenants.first_vni, o.prefix, o.first_device)


CTX = web.AppKey("ctx", ControlContext)


def _error(status: int, code: str, message: str) -> web.Response:
    body = ErrorBody(error=code, message=message).model_dump_json()
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 and code == "unauthorized" else {}
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


def _json(model: BaseModel | dict[str, Any] | list[Any], status: int = 200) -> web.Response:
    text = model.model_dump_json() if isinstance(model, BaseModel) else json.dumps(model)
    return web.Response(status=status, text=text, content_type="application/json")


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ControlError as exc:
        return _error(exc.status, exc.code, exc.message)
    except web.HTTPRequestEntityTooLarge:
        return _error(
            413, "body-too-large", f"request bodies are limited to {MAX_REQUEST_BODY} bytes"
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "-")
        return _error(exc.status, code, f"{exc.reason}: {request.method} {request.path}")
    except Exception:
        log.exception("internal error", extra={"fields": {"path": request.path}})
        return _error(500, "internal", "internal error; the gateway log has the details")


async def _body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_REQUEST_BODY:
        raise ControlError(
            "body-too-large", f"request bodies are limited to {MAX_REQUEST_BODY} bytes", 413
        )
    return await request.read()  # aiohttp enforces client_max_size for chunked bodies


def _parse(model: type[M], body: bytes) -> M:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        # Field locations and messages only: never echo input values (keys, nonces) back.
        problems = "; ".join(validation_problems(exc, top="body"))
        raise ControlError("bad-request", f"invalid {model.__name__}: {problems}", 400) from None


def _fields(request: web.Request, **more: Any) -> dict[str, Any]:
    return {"fields": {"peer": request.remote, "path": request.path, **more}}


# -- enrollment ---------------------------------------------------------------------------


async def nonce(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    now = ctx.clock()
    source = source_key(request.remote)
    if not ctx.limiter.allow(source, now):
        raise ControlError(
            "rate-limited", "too many nonce requests from this address; retry in a second", 429
        )
    value = ctx.nonces.issue(now, ctx.random(32), source)
    ctx.counters.nonces_issued += 1
    return _json(NonceResponse(nonce=value, expires_in=NONCE_TTL_SECONDS))


async def enroll(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    if not ctx.enroll_limiter.allow(source_key(request.remote), ctx.clock()):
        raise ControlError("rate-limited", "too many enrollment attempts from this address", 429)
    body = await _body(request)
    req = _parse(EnrollRequest, body)
    peer = request.remote
    try:
        return await _enroll(ctx, req, body, request.headers.get(SIGNATURE_HEADER), peer)
    except ControlError as exc:
        event = "clone-alert" if exc.code == "clone-suspected" else "enroll-refused"
        await asyncio.to_thread(ctx.registry.audit, event, req.serial, peer, exc.code)
        level = logging.WARNING if event == "clone-alert" else logging.INFO
        log.log(
            level,
            "ALERT: possible cloned appliance" if event == "clone-alert" else "enrollment refused",
            extra=_fields(
                request,
                serial=req.serial,
                outcome="refused",
                reason=exc.code,
                alert=event == "clone-alert",
            ),
        )
        if exc.code in UNIFORM_REFUSALS:
            raise uniform_refusal() from None
        raise


async def _enroll(
    ctx: ControlContext, req: EnrollRequest, body: bytes, signature: str | None, peer: str | None
) -> web.Response:
    claim = EnrollClaim(
        serial=req.serial,
        factory_public_key=req.factory_public_key,
        nonce=req.nonce,
        wireguard_public_key=req.wireguard_public_key,
        csr_pem=req.csr_pem,
        lan=LanClaim(req.lan.prefix, req.lan.router, req.lan.service_address, req.lan.lan_mtu),
    )
    row = await asyncio.to_thread(ctx.registry.device, req.serial)
    facts = (
        DeviceFacts(
            row.serial, row.factory_public_key, row.tenant, row.state, row.wireguard_public_key
        )
        if row is not None
        else None
    )
    csr_key = ctx.enroller.verify(claim, body, signature, facts)
    # Spent only by a verified request, and synchronously on the loop: exactly one winner.
    verdict = ctx.nonces.consume(claim.nonce, ctx.clock())
    if verdict is not NonceVerdict.OK:
        raise nonce_refusal(verdict)
    now = dt.datetime.fromtimestamp(ctx.clock(), dt.UTC)
    cert = ctx.enroller.issue(claim, csr_key, now, ctx.random(8))
    record = EnrollmentRecord(
        serial=claim.serial,
        factory_public_key=claim.factory_public_key,
        wireguard_public_key=claim.wireguard_public_key,
        service_ipv4=claim.lan.service_address,
        lan_prefix=str(claim.lan.prefix),
        lan_router=str(claim.lan.router) if claim.lan.router else None,
        lan_mtu=claim.lan.lan_mtu,
        lan_json=req.lan.model_dump_json(),
        cert_fingerprint=cert.fingerprint,
        cert_serial_number=cert.serial_number,
        cert_not_after=cert.not_after.timestamp(),
        peer=peer,
    )
    device, tenant = await asyncio.to_thread(ctx.registry.commit_enrollment, record, ctx.allocation)
    log.info(
        "enrolled",
        extra={
            "fields": {
                "peer": peer,
                "serial": device.serial,
                "tenant": tenant.name,
                "outcome": "ok",
                "vni": tenant.vni,
                "certificate": cert.fingerprint,
            }
        },
    )
    return _json(
        EnrollResponse(
            device_certificate_pem=cert.pem,
            ca_certificate_pem=ctx.ca_pem,
            config=device_config(ctx, tenant),
        )
    )


def device_config(ctx: ControlContext, tenant: TenantRow) -> DeviceConfig:
    s = ctx.settings
    if tenant.vni is None or tenant.overlay_address is None or tenant.service_ipv4 is None:
        raise ControlError("not-enrolled", f"tenant {tenant.name} has no allocation yet", 409)
    return DeviceConfig(
        config_version=tenant.config_version,
        tenant=tenant.name,
        tunnel=TunnelConfig(
            vni=tenant.vni,
            overlay_address=tenant.overlay_address,
            overlay_prefix_len=s.overlay.prefix.prefixlen,
            gateway_overlay_address=s.overlay.gateway,
            gateway_wireguard_public_key=ctx.gateway_wireguard_public_key,
            gateway_endpoint=s.wireguard.endpoint,
            keepalive_seconds=s.wireguard.keepalive_seconds,
            vxlan_port=s.tenants.vxlan_port,
            wireguard_mtu=s.wireguard.mtu,
        ),
        service_ipv4=tenant.service_ipv4,
        # The service host's links for this tenant (translated, native): the only unicast
        # destinations the appliance's WAN filter lets across (docs/architecture.md).
        cloud_macs=[service_mac(tenant.vni, SERVICE_LINK), service_mac(tenant.vni, NATIVE_LINK)],
        catalog=CATALOG.validate_python(tenant.catalog),
        heartbeat_seconds=s.enrollment.heartbeat_seconds,
    )


# -- device endpoints (mTLS) ----------------------------------------------------------------


async def _device(request: web.Request) -> tuple[DeviceRow, TenantRow]:
    """The device behind the verified client certificate, or a refusal naming why."""
    ctx = request.app[CTX]
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise ControlError(
            "client-certificate-required",
            "device endpoints need the device certificate from enrollment (mutual TLS)",
            401,
        )
    cert = await asyncio.to_thread(ctx.registry.certificate, pki.fingerprint(der))
    if cert is None:
        raise ControlError(
            "unknown-certificate", "this gateway did not issue that certificate", 403
        )
    if cert.revoked_at is not None:
        raise ControlError("certificate-revoked", "the certificate is revoked; re-enroll", 403)
    if cert.not_after < ctx.clock():
        raise ControlError("certificate-expired", "the certificate has expired; re-enroll", 403)
    # Read on every request, never cached: a revocation or re-enrollment counts at once.
    device = await asyncio.to_thread(ctx.registry.device, cert.device)
    if device is None or device.state != "enrolled" or device.tenant is None:
        raise ControlError("device-revoked", f"device {cert.device} is not enrolled", 403)
    if device.current_cert != cert.fingerprint:
        raise ControlError(
            "certificate-superseded",
            "the device enrolled again since this certificate was issued; use the new one",
            403,
        )
    tenant = await asyncio.to_thread(ctx.registry.tenant, device.tenant)
    assert tenant is not None
    return device, tenant


async def get_config(request: web.Request) -> web.Response:
    _, tenant = await _device(request)
    return _json(device_config(request.app[CTX], tenant))


async def heartbeat(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    device, tenant = await _device(request)
    hb = _parse(Heartbeat, await _body(request))
    if hb.serial != device.serial:
        raise ControlError(
            "serial-mismatch",
            f"heartbeat names {hb.serial} but the certificate is {device.serial}",
            403,
        )
    await asyncio.to_thread(
        ctx.registry.record_heartbeat, device.serial, request.remote, hb.model_dump(mode="json")
    )
    return _json(HeartbeatResponse(config_version=tenant.config_version))


# -- operator endpoints (bearer token) -------------------------------------------------------


async def _operator(request: web.Request) -> ControlContext:
    """The operator credential in the Authorization header, or 401 (429 once a source has
    failed too often). Every failure is audited with the source and the name it tried."""
    ctx = request.app[CTX]
    source = source_key(request.remote)
    now = ctx.clock()
    if ctx.operator_failures.blocked(source, now):
        ctx.counters.operator_auth_limited += 1
        raise ControlError(
            "rate-limited", "too many failed operator logins from this address; wait", 429
        )
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    parts = split_token(token) if scheme.lower() == "bearer" else None
    row = await asyncio.to_thread(ctx.registry.operator, parts[0]) if parts else None
    stored = (row.salt, row.hash) if row is not None and row.revoked_at is None else None
    ok = stored is not None and parts is not None and ctx.verifier.cached(token, now) == parts[0]
    if not ok:
        ok = await asyncio.to_thread(ctx.verifier.verify, token, stored, now)
        if ok and parts is not None:  # a KDF run: at most once a minute per token
            await asyncio.to_thread(ctx.registry.operator_used, parts[0])
    if ok:
        return ctx
    ctx.operator_failures.allow(source, now)
    ctx.counters.operator_auth_failed += 1
    reason = (
        "malformed" if parts is None else "unknown" if row is None
        else "revoked" if row.revoked_at is not None else "wrong-secret"
    )  # fmt: skip
    detail = {"name": parts[0] if parts else None, "path": request.path}
    await asyncio.to_thread(
        ctx.registry.audit, "operator-auth-failed", None, request.remote, reason, detail
    )
    log.warning("operator login failed", extra=_fields(request, reason=reason))
    raise ControlError(
        "unauthorized",
        "send Authorization: Bearer <a token from `cjb gateway operator add NAME`>",
        401,
    )


def tenant_doc(t: TenantRow) -> dict[str, Any]:
    return {
        "name": t.name,
        "vni": t.vni,
        "overlay_address": str(t.overlay_address) if t.overlay_address else None,
        "service_ipv4": str(t.service_ipv4) if t.service_ipv4 else None,
        "lan_prefix": t.lan_prefix,
        "lan_router": t.lan_router,
        "lan_mtu": t.lan_mtu,
        "catalog": t.catalog,
        "config_version": t.config_version,
    }


def device_doc(d: DeviceRow) -> dict[str, Any]:
    return {
        "serial": d.serial,
        "tenant": d.tenant,
        "model": d.model,
        "state": d.state,
        "factory_public_key": d.factory_public_key,
        "wireguard_public_key": d.wireguard_public_key,
        "enrolled_at": d.enrolled_at,
        "last_seen": d.last_seen,
        "last_peer": d.last_peer,
        "heartbeat": d.heartbeat,
    }


async def op_status(request: web.Request) -> web.Response:
    ctx = await _operator(request)
    reg = ctx.registry
    return _json(
        {
            "devices": await asyncio.to_thread(reg.device_states),
            "tenants": len(await asyncio.to_thread(reg.tenants)),
            "enrollments": await asyncio.to_thread(reg.enrollment_outcomes),
            "generation": await asyncio.to_thread(reg.generation),
            "nonces_held": len(ctx.nonces),
        }
    )


async def op_tenants(request: web.Request) -> web.Response:
    ctx = await _operator(request)
    return _json([tenant_doc(t) for t in await asyncio.to_thread(ctx.registry.tenants)])


async def op_tenant(request: web.Request) -> web.Response:
    ctx = await _operator(request)
    name = request.match_info["name"]
    t = await asyncio.to_thread(ctx.registry.tenant, name)
    if t is None:
        raise ControlError("unknown-tenant", f"no tenant {name!r}", 404)
    devices = await asyncio.to_thread(ctx.registry.devices, name)
    return _json({**tenant_doc(t), "devices": [d.serial for d in devices]})


async def op_set_catalog(request: web.Request) -> web.Response:
    ctx = await _operator(request)
    body = await _body(request)
    doc = catalog_doc(body)
    t = await asyncio.to_thread(ctx.registry.set_catalog, request.match_info["name"], doc)
    log.info("catalog set", extra=_fields(request, tenant=t.name, config_version=t.config_version))
    return _json(tenant_doc(t))


async def op_devices(request: web.Request) -> web.Response:
    ctx = await _operator(request)
    return _json([device_doc(d) for d in await asyncio.to_thread(ctx.registry.devices)])


async def op_device(request: web.Request) -> web.Response:
    ctx = await _operator(request)
    serial = request.match_info["serial"]
    d = await asyncio.to_thread(ctx.registry.device, serial)
    if d is None:
        raise ControlError("unknown-serial", f"no device {serial} in the inventory", 404)
    certs = await asyncio.to_thread(ctx.registry.certificates, serial)
    return _json(
        {
            **device_doc(d),
            "certificates": [
                {"fingerprint": c.fingerprint, "not_after": c.not_after, "revoked_at": c.revoked_at}
                for c in certs
            ],
        }
    )


class _RevokeBody(BaseModel):
    reason: str = "operator"


async def op_revoke(request: web.Request) -> web.Response:
    ctx = await _operator(request)
    body = await _body(request)
    reason = _parse(_RevokeBody, body or b"{}").reason
    d = await asyncio.to_thread(ctx.registry.revoke, request.match_info["serial"], reason, "api")
    log.warning("device revoked", extra=_fields(request, serial=d.serial, reason=reason))
    return _json(device_doc(d))


async def get_metrics(request: web.Request) -> web.Response:
    ctx = await _operator(request)
    collectors: list[Collector] = [
        metrics.ControlCollector(
            ctx.registry,
            ctx.clock,
            ctx.nonces,
            ctx.limiter,
            ctx.counters,
            ctx.enroll_limiter,
            ctx.operator_failures,
        ),
        *ctx.extra_collectors,
    ]
    text = await asyncio.to_thread(metrics.render, collectors)
    return web.Response(body=text, headers={"Content-Type": metrics.CONTENT_TYPE})


def make_app(ctx: ControlContext) -> web.Application:
    """The device surface: what the internet may reach."""
    app = web.Application(middlewares=[_errors], client_max_size=MAX_REQUEST_BODY)
    app[CTX] = ctx
    app.router.add_post("/v1/enroll/nonce", nonce)
    app.router.add_post("/v1/enroll", enroll)
    app.router.add_get("/v1/device/config", get_config)
    app.router.add_post("/v1/device/heartbeat", heartbeat)
    return app


def make_operator_app(ctx: ControlContext) -> web.Application:
    """The operator surface: operator API and /metrics, on the operator listener only."""
    app = web.Application(middlewares=[_errors], client_max_size=MAX_REQUEST_BODY)
    app[CTX] = ctx
    app.router.add_get("/v1/operator/status", op_status)
    app.router.add_get("/v1/operator/tenants", op_tenants)
    app.router.add_get("/v1/operator/tenants/{name}", op_tenant)
    app.router.add_put("/v1/operator/tenants/{name}/catalog", op_set_catalog)
    app.router.add_get("/v1/operator/devices", op_devices)
    app.router.add_get("/v1/operator/devices/{serial}", op_device)
    app.router.add_post("/v1/operator/devices/{serial}/revoke", op_revoke)
    app.router.add_get("/metrics", get_metrics)
    return app
