"""`cjb gateway run`: reconcile kernel objects, run one worker per tenant, publish status.

One asyncio loop. Every second: rewrite the status file (counters for `cjb gateway
status`) and, when the config file changed, reconcile again and restart changed workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from pathlib import Path

from cjb.common.netlink import NetlinkError, apply
from cjb.common.netlink.nft import apply_table, counters
from cjb.common.netlink.real import RealKernel
from cjb.gateway.dataplane.config import GatewayConfig, TenantSpec, load
from cjb.gateway.dataplane.directory import write_directory, write_json_atomic
from cjb.gateway.dataplane.kernel_spec import gateway_spec
from cjb.gateway.dataplane.router import FrameRouter, Port
from cjb.gateway.dataplane.vni_binding import (
    TABLE_FAMILY,
    TABLE_NAME,
    UNKNOWN,
    binding_table,
    tenant_counters,
)
from cjb.gateway.dataplane.worker import TenantWorker, open_port
from cjb.gateway.xlat import Translator, XlatConfig

log = logging.getLogger("cjb.gateway")
PUBLISH_INTERVAL = 1.0


def reconcile(cfg: GatewayConfig) -> list[str]:
    """Kernel objects and nftables binding for every tenant; returns what changed."""
    with RealKernel() as kernel:
        changes: list[str] = apply(kernel, gateway_spec(cfg))
    try:
        previous = counters(None, TABLE_FAMILY, TABLE_NAME)
    except NetlinkError:  # first start: no table yet
        previous = {}
    apply_table(None, binding_table(cfg, previous))
    write_directory(cfg)
    return changes


class Gateway:
    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.cfg = load(config_path)
        self.workers: dict[str, tuple[TenantSpec, TenantWorker]] = {}
        self.errors: dict[str, str] = {}
        self._mtime = 0.0
        self._stop = asyncio.Event()

    def _start_worker(self, loop: asyncio.AbstractEventLoop, t: TenantSpec) -> None:
        translator = Translator(XlatConfig(lan_mtu=t.lan_mtu, service_mtu=t.lan_mtu + 20))
        router = FrameRouter(translator, native=t.native_ipv6)
        names = {Port.TUNNEL: t.tunnel_port, Port.SERVICE: t.service_port}
        if t.native_ipv6:
            names[Port.NATIVE] = t.native_port
        try:
            sockets = {port: open_port(name) for port, name in names.items()}
        except OSError as exc:
            self.errors[t.name] = f"cannot open ports {sorted(names.values())}: {exc.strerror}"
            return
        worker = TenantWorker(router, sockets)
        worker.start(loop)
        self.workers[t.name] = (t, worker)
        self.errors.pop(t.name, None)

    async def sync(self, loop: asyncio.AbstractEventLoop) -> None:
        self._mtime = self.config_path.stat().st_mtime
        # Blocking netlink/nft work stays off the loop (pyroute2's sync API also refuses
        # to run inside a running loop).
        for change in await asyncio.to_thread(reconcile, self.cfg):
            log.info("reconcile: %s", change)
        wanted = {t.name: t for t in self.cfg.tenants}
        for name, (spec, worker) in list(self.workers.items()):
            if wanted.get(name) != spec:
                worker.stop()
                del self.workers[name]
        for name, t in wanted.items():
            if name not in self.workers:
                self._start_worker(loop, t)

    def _config_changed(self) -> bool:
        try:
            return self.config_path.stat().st_mtime != self._mtime
        except FileNotFoundError:
            return False

    def _nft_counters(self) -> dict[str, tuple[int, int]]:
        try:
            found: dict[str, tuple[int, int]] = counters(None, TABLE_FAMILY, TABLE_NAME)
            return found
        except Exception as exc:  # status must still be written when nft fails
            self.errors["nftables"] = str(exc)
            return {}

    def snapshot(self, nft: dict[str, tuple[int, int]]) -> dict[str, object]:
        tenants: dict[str, object] = {}
        for t in self.cfg.tenants:
            entry = self.workers.get(t.name)
            ports = {"tunnel": t.tunnel_port, "service": t.service_port}
            if t.native_ipv6:
                ports["native"] = t.native_port
            item: dict[str, object] = {
                "state": "running" if entry else "error",
                "error": self.errors.get(t.name),
                "vni": t.vni,
                "appliance": str(t.appliance),
                "ports": ports,
                "service_ifname": t.service_ifname,
                "vni_binding": tenant_counters(nft, t.name),
            }
            if entry is not None:
                worker = entry[1]
                item["router"] = worker.router.counters.as_dict()
                translator = worker.router.translator
                if isinstance(translator, Translator):
                    item["translator"] = translator.counters.as_dict()
            tenants[t.name] = item
        return {
            "pid": os.getpid(),
            "updated": time.time(),
            "config": str(self.config_path),
            "unknown_vni_drops": nft.get(UNKNOWN, (0, 0))[0],
            "tenants": tenants,
        }

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        await self.sync(loop)
        log.info("gateway running: %d tenants", len(self.cfg.tenants))
        while not self._stop.is_set():
            if self._config_changed():
                try:
                    self.cfg = load(self.config_path)
                    await self.sync(loop)
                except Exception as exc:  # keep serving the old config; say why
                    log.error("config reload failed, keeping the previous one: %s", exc)
                    self.errors["config"] = str(exc)
            nft = await asyncio.to_thread(self._nft_counters)
            write_json_atomic(self.cfg.status_file, self.snapshot(nft))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), PUBLISH_INTERVAL)
        for _, worker in self.workers.values():
            worker.stop()
        final = self.snapshot(self._nft_counters())
        final["stopped"] = True
        write_json_atomic(self.cfg.status_file, final)


def run(config_path: Path) -> None:
    asyncio.run(Gateway(config_path).run())
