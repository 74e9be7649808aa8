"""The device's side of image updates, on the mTLS device API (docs/decisions/0009-updates.md).

  GET  /v1/device/update?running=V        200 {version, sha256, size, path} or 204 (nothing)
  GET  /v1/device/update/bundle/{version} the signed bundle, only to a device it is offered to
  POST /v1/device/update/report           {version, state, running, detail}

Store calls are small local SQLite statements and run on the loop (one connection, no
threads to share it). The device is the one behind the verified client certificate
(api._device), never a serial from the request. The bundle's signature is checked on the
device (RAUC, operator CA); the sha256 here lets the device refuse a truncated or swapped
download before installing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from cjb.gateway.control.errors import ControlError
from cjb.gateway.control.updates import STATES, VERSION_RE, UpdateError, UpdateStore

STORE = web.AppKey("updates", UpdateStore)
Version = Annotated[str, Field(pattern=VERSION_RE.pattern)]


class UpdateReport(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: Version
    state: Annotated[str, Field(pattern="^(" + "|".join(STATES) + ")$")]
    running: Version | None = None
    detail: Annotated[str, Field(max_length=500)] = ""


def _running(request: web.Request) -> str | None:
    value = request.query.get("running")
    if value is not None and not VERSION_RE.match(value):
        raise ControlError("bad-request", f"running={value!r}: not a version", 400)
    return value


async def get_update(request: web.Request) -> web.Response:
    from cjb.gateway.control.api import _device, _json

    device, tenant = await _device(request)
    store = request.app[STORE]
    running = _running(request)
    release = store.offer(device.serial, tenant.name, running)
    if release is None:
        return web.Response(status=204)
    last = store.report(device.serial)
    if last is None or last.version != release.version:
        store.record(device.serial, release.version, "offered", running)
    return _json(
        {
            "version": release.version,
            "sha256": release.sha256,
            "size": release.size,
            "path": f"/v1/device/update/bundle/{release.version}",
        }
    )


async def get_bundle(request: web.Request) -> web.StreamResponse:
    from cjb.gateway.control.api import _device

    device, tenant = await _device(request)
    store = request.app[STORE]
    version = request.match_info["version"]
    release = store.offer(device.serial, tenant.name, None)
    if release is None or release.version != version:
        raise ControlError(
            "not-offered", f"version {version!r} is not offered to {device.serial}", 403
        )
    store.record(device.serial, version, "downloading", None)
    return web.FileResponse(release.bundle)


async def post_report(request: web.Request) -> web.Response:
    from cjb.gateway.control.api import _body, _device, _json, _parse

    device, _ = await _device(request)
    report = _parse(UpdateReport, await _body(request))
    try:
        rep = request.app[STORE].record(
            device.serial,
            report.version,
            report.state,
            report.running,
            report.detail,
        )
    except UpdateError as exc:
        raise ControlError("bad-request", str(exc), 400) from None
    return _json({"serial": rep.serial, "version": rep.version, "state": rep.state})


def register(app: web.Application, state_dir: Path) -> None:
    """Add the update routes and their store (closed with the app) to the device API."""
    store = UpdateStore.open(state_dir)
    app[STORE] = store

    async def close(_app: web.Application) -> None:
        store.close()

    app.on_cleanup.append(close)
    app.router.add_get("/v1/device/update", get_update)
    app.router.add_get("/v1/device/update/bundle/{version}", get_bundle)
    app.router.add_post("/v1/device/update/report", post_report)
