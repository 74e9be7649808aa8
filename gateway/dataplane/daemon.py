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

from cjb.common.netlink import NetlinkError, TcBpf, apply
from cjb.common.netlink.nft import apply_table, counters
from cjb.common.netlink.real import RealKernel
from cjb.common.tunnel_mtu import service_mtu_for
from cjb.common.vxlan_guard import GuardError, VxlanGuard, attach, underlay_links
from cjb.common.wireguard import WireGuard
from cjb.common.wireguard.model import Endpoint
from cjb.gateway.dataplane.bpf.manager import KernelFastPaths
from cjb.gateway.dataplane.config import GatewayConfig, TenantSpec, load
from cjb.gateway.dataplane.desired import RegistrySource
from cjb.gateway.dataplane.directory import write_directory, write_json_atomic
from cjb.gateway.dataplane.drift import RESYNC_INTERVAL, LinkTable, link_table, resync_interval
from cjb.gateway.dataplane.kernel_spec import gateway_spec
from cjb.gateway.dataplane.lan_guard import lan_guard
from cjb.gateway.dataplane.router import Port, VnetFrameRouter
from cjb.gateway.dataplane.vni_binding import (
    TABLE_FAMILY,
    TABLE_NAME,
    UNKNOWN,
    binding_table,
    host_counters,
    tenant_counters,
)
from cjb.gateway.dataplane.wg_transport import (
    alive,
    endpoints_of,
    peer_status,
    previous_endpoints,
    reconcile_wireguard,
    restore_sessions,
)
from cjb.gateway.dataplane.worker import RxBuffer, TenantWorker, open_worker
from cjb.gateway.xlat import Translator, XlatConfig

log = logging.getLogger("cjb.gateway")
PUBLISH_INTERVAL = 1.0
# Drift repair (drift.py): a link added or deleted behind our back triggers a reconcile
# within a second; a full one runs every RESYNC_INTERVAL or more (it costs ~1 s at 100
# tenants).


def _int(v: object) -> int:
    return v if isinstance(v, int) else 0


def reconcile(
    cfg: GatewayConfig,
    wg: WireGuard | None = None,
    tc_ingress: dict[str, TcBpf] | None = None,
    endpoints: dict[str, Endpoint] | None = None,
    guard: VxlanGuard | None = None,
) -> list[str]:
    """Kernel objects, the VXLAN guard and the nftables policy; returns what changed.

    WireGuard first: its interface must exist before the netlink spec adopts it, and a
    revoked device's peer goes before anything else is touched. The guard's map is
    written before its programs are attached (a new object passes nothing unconfigured).
    """
    changes: list[str] = []
    created = False
    if cfg.wireguard is not None:
        wg = wg or WireGuard()
        wg_changes, created = reconcile_wireguard(wg, cfg)
        changes += wg_changes
    tc = dict(tc_ingress or {})
    if guard is not None:
        guard.configure(cfg.underlay_port, {t.vni: t.appliance for t in cfg.tenants})
        if cfg.wireguard is not None:
            tc[cfg.wireguard.ifname] = guard.program("tunnel")
    with RealKernel() as kernel:
        spec = gateway_spec(cfg, tc)
        changes += apply(kernel, spec)
        if guard is not None:
            own = {link.name for ns in spec.namespaces if ns.name is None for link in ns.links}
            # WireGuard: no VXLAN from any underlay NIC. Trusted link: the binding there.
            role = "wan" if cfg.wireguard is not None else "trusted"
            changes += attach(kernel, None, underlay_links(kernel, None, own), guard.program(role))
    if created and wg is not None:
        changes += restore_sessions(wg, cfg, endpoints)  # the interface is up now
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
        self.workers: dict[str, tuple[TenantSpec, TenantWorker]] = {}
        self.errors: dict[str, str] = {}
        self._mtime = 0.0
        self._stop = asyncio.Event()
        self.source: RegistrySource | None = None
        self._generation: int | None = None
        self._last_sync = 0.0
        self._resync_every = RESYNC_INTERVAL
        self._links: LinkTable | None = None  # the links as the last sync left them
        self.wg: WireGuard | None = None
        # Appliance endpoints last seen, to re-handshake from our side after the WireGuard
        # interface is re-created (wg_transport.restore_sessions).
        self.endpoints: dict[str, Endpoint] = {}
        self.fast = KernelFastPaths()  # tc-eBPF fast paths of `fast_path: kernel` tenants
        # The VNI binding in tc (cjb.common.vxlan_guard): what `nft flush ruleset` cannot
        # remove. Without it (no libbpf or object) the nftables table is the only layer.
        self.guard: VxlanGuard | None = None
        self._nft_last: dict[str, tuple[int, int]] = {}  # counters carried over a restore
        self.nft_restored = 0  # times the table was found gone and put back
        self.rx = RxBuffer()  # one for every worker: they all run on this loop's thread
        self.cfg = self._load()
        # An installed package's source tree may be read-only: the BPF objects are found
        # there or built into the state directory (common/bpf_object.py).
        self.fast.cache_dir = self.cfg.state_dir / "bpf"
        self.endpoints = previous_endpoints(self.cfg.status_file)

    def _load(self) -> GatewayConfig:
        """The file, plus the registry's tenants when it names one (the desired state)."""
        base = load(self.config_path)
        if base.wireguard is not None and self.wg is None:
            self.wg = WireGuard()
        if base.registry is None:
            if self.source is not None:
                self.source.close()
                self.source = None
            return base
        if self.source is None or self.source.base.registry != base.registry:
            if self.source is not None:
                self.source.close()
            self.source = RegistrySource(base)
        self.source.base = base
        self._generation = self.source.generation()
        return self.source.config()

    def _registry_changed(self) -> bool:
        if self.source is None:
            return False
        try:
            return self.source.generation() != self._generation
        except Exception as exc:  # a locked or broken registry: keep the last state, say why
            self.errors["registry"] = str(exc)
            return False

    def _transport_lost(self) -> bool:
        """The WireGuard interface vanished (wireguard-go died or was deleted): rebuild."""
        if self.wg is None or self.cfg.wireguard is None:
            return False
        try:
            return not alive(self.wg, self.cfg)
        except Exception:
            return True

    def _start_worker(self, loop: asyncio.AbstractEventLoop, t: TenantSpec) -> None:
        translator = Translator(
            XlatConfig(lan_mtu=t.lan_mtu, service_mtu=service_mtu_for(t.lan_mtu))
        )
        names = {Port.TUNNEL: t.tunnel_port, Port.SERVICE: t.service_port}
        if t.native_ipv6:
            names[Port.NATIVE] = t.native_port
        try:
            worker = open_worker(
                translator, t.native_ipv6, names, t.userspace_io, self.rx, lan_guard(t)
            )
        except OSError as exc:
            self.errors[t.name] = f"cannot open ports {sorted(names.values())}: {exc.strerror}"
            return
        self.fast.filter_sockets(t.name, worker.sockets)
        worker.start(loop)
        self.workers[t.name] = (t, worker)
        self.errors.pop(t.name, None)

    async def sync(self, loop: asyncio.AbstractEventLoop) -> None:
        self._mtime = self.config_path.stat().st_mtime
        # Blocking netlink/nft work stays off the loop (pyroute2's sync API also refuses
        # to run inside a running loop).
        self._last_sync = time.monotonic()
        # Kernel fast path: load (disabled), attach with the spec, filter the new workers'
        # sockets, then enable: each frame is handled exactly once (bpf/manager.py).
        tc = await asyncio.to_thread(self.fast.attachments, self.cfg.tenants)
        await asyncio.to_thread(self._load_guard)
        started = time.monotonic()
        changes = await asyncio.to_thread(
            reconcile, self.cfg, self.wg, tc, self.endpoints, self.guard
        )
        for change in changes:
            log.info("reconcile: %s", change)
        if not changes:  # what a drift check costs (building tenants costs far more)
            self._resync_every = resync_interval(time.monotonic() - started)
        wanted = {t.name: t for t in self.cfg.tenants}
        for name, (spec, worker) in list(self.workers.items()):
            if wanted.get(name) != spec:
                worker.stop()
                del self.workers[name]
        for name, t in wanted.items():
            if name not in self.workers:
                self._start_worker(loop, t)
        await asyncio.to_thread(self.fast.activate, self.cfg.tenants)
        await asyncio.to_thread(self._record_links)

    def _load_guard(self) -> None:
        if self.guard is not None:
            return
        try:
            self.guard = VxlanGuard(cache_dir=self.cfg.state_dir / "bpf")
            self.errors.pop("vxlan_guard", None)
        except GuardError as exc:
            log.warning("%s; the VNI binding depends on nftables alone", exc)
            self.errors["vxlan_guard"] = f"{exc}; the VNI binding depends on nftables alone"

    def _guard_spoofed(self) -> dict[int, int]:
        if self.guard is None:
            return {}
        try:
            return self.guard.spoofed()
        except OSError:
            return {}

    def _guard_status(self) -> dict[str, object]:
        if self.guard is None:
            return {"active": False, "error": self.errors.get("vxlan_guard")}
        try:
            return {"active": True, "drops": self.guard.counters()}
        except OSError as exc:
            return {"active": True, "error": str(exc)}

    def _namespaces(self) -> tuple[str | None, ...]:
        return (None,) if self.cfg.service_netns is None else (None, self.cfg.service_netns)

    def _record_links(self) -> None:
        try:
            self._links = link_table(self._namespaces())
        except NetlinkError:  # the service namespace is gone: the next check says "moved"
            self._links = None

    def _links_moved(self) -> bool:
        """A link appeared, vanished or was recreated since the last sync (cheap)."""
        try:
            return link_table(self._namespaces()) != self._links
        except NetlinkError:
            return True

    def _config_changed(self) -> bool:
        try:
            return self.config_path.stat().st_mtime != self._mtime
        except FileNotFoundError:
            return False

    def _nft_counters(self) -> dict[str, tuple[int, int]]:
        try:
            found: dict[str, tuple[int, int]] = counters(None, TABLE_FAMILY, TABLE_NAME)
        except Exception:
            return self._restore_table()
        self._nft_last = found
        self.errors.pop("nftables", None)
        return found

    def _restore_table(self) -> dict[str, tuple[int, int]]:
        """The table is gone (`nft flush ruleset`, an nftables.service reload, a delete):
        put it back within this second. The tc guard held the VNI binding meanwhile."""
        try:
            apply_table(None, binding_table(self.cfg, self._nft_last))
        except Exception as exc:  # status must still be written when nft fails
            self.errors["nftables"] = str(exc)
            return {}
        self.nft_restored += 1
        log.warning("nftables table %s %s was gone: restored", TABLE_FAMILY, TABLE_NAME)
        return self._nft_last

    def _wg_peers(self) -> dict[str, dict[str, object]]:
        if self.wg is None or self.cfg.wireguard is None:
            return {}
        try:
            peers = peer_status(self.wg, self.cfg)
        except Exception as exc:  # status must still be written when WireGuard is down
            self.errors["wireguard"] = str(exc)
            return {}
        self.errors.pop("wireguard", None)
        self.endpoints.update(endpoints_of(peers))
        return peers

    def snapshot(
        self,
        nft: dict[str, tuple[int, int]],
        wg_peers: dict[str, dict[str, object]] | None = None,
    ) -> dict[str, object]:
        wg_peers = wg_peers or {}
        tenants: dict[str, object] = {}
        guard_spoofed = self._guard_spoofed()
        guard = self._guard_status()
        guard_drops = guard.get("drops") or {}
        assert isinstance(guard_drops, dict)
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
                "vni_binding": tenant_counters(nft, t.name, guard_spoofed.get(t.vni, 0)),
            }
            if t.name in wg_peers:
                item["wireguard"] = wg_peers[t.name]
            if entry is not None:
                worker = entry[1]
                worker.poll_kernel_drops()  # before the counters are copied
                item["router"] = worker.router.counters.as_dict()
                translator = worker.router.translator
                if isinstance(translator, Translator):
                    item["translator"] = translator.counters.as_dict()
                item["userspace_io"] = t.userspace_io
                if isinstance(worker.router, VnetFrameRouter):
                    item["gso"] = worker.router.vnet.counters.as_dict()
            item["fast_path"] = {
                "mode": t.fast_path,
                "active": self.fast.active(t.name),
                "error": self.fast.errors.get(t.name),
                "counters": self.fast.status(t.name),
            }
            tenants[t.name] = item
        return {
            "pid": os.getpid(),
            "updated": time.time(),
            "config": str(self.config_path),
            # Both layers: the tc guard drops unknown VNIs before nftables sees them.
            "unknown_vni_drops": nft.get(UNKNOWN, (0, 0))[0] + _int(guard_drops.get("unknown_vni")),
            "host_input": host_counters(nft),
            "nft_restored": self.nft_restored,
            "vxlan_guard": guard,
            "fast_path": self.fast.summary(self.cfg.tenants),
            "transport": "wireguard" if self.cfg.wireguard else "vxlan",
            "wireguard_ifname": self.cfg.wireguard.ifname if self.cfg.wireguard else None,
            "errors": {k: v for k, v in self.errors.items() if k not in self.workers},
            "tenants": tenants,
        }

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        await self.sync(loop)
        log.info("gateway running: %d tenants", len(self.cfg.tenants))
        while not self._stop.is_set():
            # Desired state moved (file or registry), the transport died, a link moved, or
            # the periodic drift repair is due: reconcile. A revoked device's peer goes
            # within a second.
            resync = time.monotonic() - self._last_sync > self._resync_every
            if (
                self._config_changed()
                or self._registry_changed()
                or resync
                or await asyncio.to_thread(self._links_moved)
            ):
                try:
                    self.cfg = await asyncio.to_thread(self._load)
                    await self.sync(loop)
                    self.errors.pop("config", None)
                except Exception as exc:  # keep serving the old config; say why
                    log.error("config reload failed, keeping the previous one: %s", exc)
                    self.errors["config"] = str(exc)
            elif await asyncio.to_thread(self._transport_lost):
                log.warning("wireguard interface lost: rebuilding it")
                try:
                    await self.sync(loop)
                except Exception as exc:
                    log.error("rebuilding the wireguard interface failed: %s", exc)
                    self.errors["wireguard"] = str(exc)
            nft = await asyncio.to_thread(self._nft_counters)
            peers = await asyncio.to_thread(self._wg_peers)
            write_json_atomic(self.cfg.status_file, self.snapshot(nft, peers))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), PUBLISH_INTERVAL)
        for _, worker in self.workers.values():
            worker.stop()
        if self.source is not None:
            self.source.close()
        final = self.snapshot(self._nft_counters())
        final["stopped"] = True
        write_json_atomic(self.cfg.status_file, final)
        # Attached programs stay in the kernel (like the links); a restart replaces them.
        self.fast.close()


def run(config_path: Path) -> None:
    asyncio.run(Gateway(config_path).run())
