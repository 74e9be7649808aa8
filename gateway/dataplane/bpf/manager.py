"""The gateway's kernel fast paths: one loaded object per tenant in `fast_path: "kernel"`.

The reconciler's order (daemon.sync) keeps every frame handled exactly once:
  1. `attachments(cfg)`: load objects for kernel-mode tenants (config map disabled: the tc
     programs pass everything to the slow path), close those of tenants that left the
     mode; returns the `TcBpf` per gateway port for the netlink spec.
  2. apply the spec: attach (or replace, or detach) the programs on tc ingress.
  3. start workers; `filter_sockets` puts the `*_skip` filters on kernel-mode workers.
  4. `activate(cfg)`: write ports and MTUs into each config map and enable it. From here
     the tc program and the worker's filter decide with the same predicate and config.
A tenant whose object cannot be loaded runs in userspace; `errors` says why, and
`summary` gives the gateway-wide line (`cjb gateway status`, the metrics gauge).
"""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cjb.common.netlink import TcBpf
from cjb.common.tunnel_mtu import service_mtu_for
from cjb.gateway.dataplane.bpf.fastpath import (
    FastPath,
    FastPathConfig,
    FastPathError,
    find_object,
)
from cjb.gateway.dataplane.config import TenantSpec
from cjb.gateway.dataplane.lan_guard import cloud_macs

KERNEL = "kernel"
USERSPACE = "userspace"
log = logging.getLogger(__name__)


def _ports(t: TenantSpec) -> dict[str, str]:
    ports = {"tunnel": t.tunnel_port, "service": t.service_port}
    if t.native_ipv6:
        ports["native"] = t.native_port
    return ports


class KernelFastPaths:
    def __init__(
        self,
        loader: Callable[[], FastPath] | None = None,
        ifindex: Callable[[str], int] = socket.if_nametoindex,
        cache_dir: Path | None = None,
    ) -> None:
        self._loader = loader or self._load_object
        self._ifindex = ifindex
        self.cache_dir = cache_dir  # where an installed gateway builds the object
        self._object: Path | None = None
        self._object_error: str | None = None  # found or built once per process
        self.loaded: dict[str, FastPath] = {}
        self.errors: dict[str, str] = {}
        self.unfiltered: set[str] = set()  # tenants whose worker lacks the skip filters

    def _load_object(self) -> FastPath:
        if self._object_error is not None:
            raise FastPathError(self._object_error)
        if self._object is None:
            try:
                self._object = find_object(self.cache_dir)
            except FastPathError as exc:
                self._object_error = str(exc)
                raise
            log.info("kernel fast path object: %s", self._object)
        # A random first IPv4 ID: the worker's translator numbers its DF-clear packets from
        # its own counter, so two counters starting together would repeat each other's IDs.
        return FastPath(self._object, first_ipv4_id=secrets.randbelow(1 << 16))

    def wanted(self, tenants: tuple[TenantSpec, ...]) -> list[TenantSpec]:
        return [t for t in tenants if t.fast_path == KERNEL]

    def attachments(self, tenants: tuple[TenantSpec, ...]) -> dict[str, TcBpf]:
        """Load what is missing, close what is no longer wanted; link name -> program."""
        wanted = {t.name: t for t in self.wanted(tenants)}
        for name in list(self.loaded):
            if name not in wanted:
                # Disabled first: until the old worker (whose sockets carry this object's
                # filters) is replaced, every frame goes to it, none is skipped and lost.
                leaving = self.loaded.pop(name)
                leaving.disable()
                leaving.close()
        self.errors = {k: v for k, v in self.errors.items() if k in wanted}
        out: dict[str, TcBpf] = {}
        for name, t in wanted.items():
            fp = self.loaded.get(name)
            if fp is None:
                try:
                    fp = self._loader()
                except FastPathError as exc:
                    self._fall_back(name, f"kernel fast path unavailable, running userspace: {exc}")
                    continue
                self.loaded[name] = fp
                self.errors.pop(name, None)
            try:
                progs = {
                    link: TcBpf(fp.program_fd(role), fp.program_id(role), fp.program_name(role))
                    for role, link in _ports(t).items()
                }
            except OSError as exc:  # a libbpf call failed: this tenant runs in userspace
                self.loaded.pop(name).close()
                self._fall_back(name, f"kernel fast path unavailable, running userspace: {exc}")
                continue
            out.update(progs)
        return out

    def _fall_back(self, tenant: str, reason: str) -> None:
        if self.errors.get(tenant) != reason:  # once per reason, not on every resync
            log.warning("tenant %s: %s", tenant, reason)
        self.errors[tenant] = reason

    def active(self, tenant: str) -> bool:
        """The tc programs translate this tenant's common case (loaded, filtered, no error)."""
        return tenant in self.loaded and tenant not in self.unfiltered and tenant not in self.errors

    def summary(self, tenants: tuple[TenantSpec, ...]) -> dict[str, object]:
        """The gateway-wide mode: "kernel" when every tenant that wants it has it,
        "userspace" with the reason otherwise (the first failing tenant's)."""
        wanted = self.wanted(tenants)
        if not wanted:
            reason = "configured (fast_path: userspace)" if tenants else "no tenants"
            return {"mode": USERSPACE, "reason": reason, "kernel_tenants": 0}
        active = [t.name for t in wanted if self.active(t.name)]
        failing = sorted(t.name for t in wanted if t.name not in active)
        out: dict[str, object] = {"mode": KERNEL, "kernel_tenants": len(active)}
        if failing:
            first = failing[0]
            why = self.errors.get(first, "not enabled yet")
            out["mode"] = KERNEL if active else USERSPACE
            out["reason"] = f"{len(failing)} of {len(wanted)} tenants in userspace ({first}: {why})"
            if not active:
                out["reason"] = why
        return out

    def filter_sockets(self, tenant: str, sockets: Mapping[Any, socket.socket]) -> None:
        """Worker sockets by port (router.Port, whose value is the role name)."""
        fp = self.loaded.get(tenant)
        if fp is None:
            return
        try:
            for port, sock in sockets.items():
                fp.attach_skip_filter(sock, getattr(port, "value", port))
        except OSError as exc:
            # Without the filters the worker would translate the fast path's frames too:
            # leave this tenant's programs disabled (everything via the slow path).
            self.unfiltered.add(tenant)
            self._fall_back(tenant, f"kernel fast path left disabled: worker filter: {exc}")
        else:
            self.unfiltered.discard(tenant)

    def activate(self, tenants: tuple[TenantSpec, ...]) -> None:
        for t in self.wanted(tenants):
            fp = self.loaded.get(t.name)
            if fp is None or t.name in self.unfiltered:
                continue
            try:
                config = FastPathConfig(
                    tunnel_ifindex=self._ifindex(t.tunnel_port),
                    service_ifindex=self._ifindex(t.service_port),
                    native_ifindex=self._ifindex(t.native_port) if t.native_ipv6 else 0,
                    lan_mtu=t.lan_mtu,
                    service_mtu=service_mtu_for(t.lan_mtu),  # as the worker's XlatConfig
                    cloud_macs=tuple(sorted(cloud_macs(t))),
                )
                fp.configure(config)
            except OSError as exc:
                self._fall_back(t.name, f"kernel fast path not enabled: {exc}")
                continue
            self.errors.pop(t.name, None)

    def status(self, tenant: str) -> dict[str, object] | None:
        fp = self.loaded.get(tenant)
        if fp is None:
            return None
        try:
            counters: dict[str, object] = dict(fp.counters().as_dict())
        except OSError as exc:
            return {"error": f"cannot read counters: {exc}"}
        return counters

    def close(self) -> None:
        for fp in self.loaded.values():
            fp.close()
        self.loaded.clear()
