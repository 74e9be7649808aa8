"""`WireGuard`: one facade over both backends; desired-state apply for an interface.

    wg = WireGuard()                      # kernel module if loaded, else wireguard-go
    wg.ensure(ns, "wgl1a2b-g")            # create if missing (adopt if running)
    changes = wg.apply(ns, "wgl1a2b-g", DeviceSpec(private_key=..., peers=(...)))
    wg.show(ns, "wgl1a2b-g").peers[0].last_handshake
    wg.delete(ns, "wgl1a2b-g")

Addresses, MTU and up/down of the interface are netlink business: declare the interface
as an `Existing` link in a `NetworkSpec` after `ensure`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Protocol

from cjb.common.wireguard.kernel import KernelBackend, module_loaded
from cjb.common.wireguard.model import DeviceSpec, DeviceStatus, WireGuardError
from cjb.common.wireguard.plan import SetRequest, plan
from cjb.common.wireguard.userspace import UserspaceBackend

log = logging.getLogger("cjb.wireguard")
BACKEND_ENV = "CJB_WIREGUARD_BACKEND"  # "kernel" or "wireguard-go": override the choice


class Backend(Protocol):
    name: str

    def exists(self, ns: str | None, ifname: str) -> bool: ...

    def create(self, ns: str | None, ifname: str, log_file: Path | None = None) -> None: ...

    def delete(self, ns: str | None, ifname: str) -> None: ...

    def get(self, ns: str | None, ifname: str) -> DeviceStatus: ...

    def set(self, ns: str | None, ifname: str, request: SetRequest) -> None: ...


def select_backend() -> Backend:
    choice = os.environ.get(BACKEND_ENV)
    if choice not in (None, "", "kernel", "wireguard-go"):
        raise WireGuardError(f"{BACKEND_ENV}={choice!r}: use 'kernel' or 'wireguard-go'")
    backend: Backend
    if choice == "kernel" or (not choice and module_loaded()):
        backend = KernelBackend()
        why = "forced" if choice else "the kernel module is loaded"
    else:
        backend = UserspaceBackend()
        why = "forced" if choice else "no WireGuard kernel module"
    log.info("wireguard backend: %s (%s)", backend.name, why)
    return backend


class WireGuard:
    def __init__(self, backend: Backend | None = None) -> None:
        self.backend = backend if backend is not None else select_backend()

    def exists(self, ns: str | None, ifname: str) -> bool:
        return self.backend.exists(ns, ifname)

    def ensure(self, ns: str | None, ifname: str, log_file: Path | None = None) -> bool:
        """Create the interface unless it exists; True when it was created now."""
        _check_name(ifname)
        if self.backend.exists(ns, ifname):
            return False
        self.backend.create(ns, ifname, log_file)
        log.info(
            "created wireguard interface %s in %s (%s)",
            ifname,
            ns or "this netns",
            self.backend.name,
        )
        return True

    def apply(self, ns: str | None, ifname: str, desired: DeviceSpec) -> list[str]:
        """Make the interface's keys and peers match `desired`; returns what changed."""
        request, changes = plan(desired, self.backend.get(ns, ifname))
        if not request.empty:
            self.backend.set(ns, ifname, request)
        return changes

    def show(self, ns: str | None, ifname: str) -> DeviceStatus:
        return self.backend.get(ns, ifname)

    def delete(self, ns: str | None, ifname: str) -> None:
        self.backend.delete(ns, ifname)


def _check_name(ifname: str) -> None:
    if not 0 < len(ifname.encode()) <= 15 or "/" in ifname or ifname.startswith("-"):
        raise WireGuardError(
            f"interface name {ifname!r}: 1..15 bytes, no '/', not starting with '-' "
            "(include a run id: names are machine-wide for wireguard-go)"
        )
