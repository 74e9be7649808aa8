"""Tenancy for applications on the service host: which tenant is this peer?

Mechanism: the gateway publishes the **tenant directory as a JSON file** on the service host
(see `cjb.service.directory` for the format; the gateway writes it atomically with
temp-file + rename). This library reads it at start, then **watches it by polling its stat
stamp** (`cjb.service.watch`): the caller drives the polling — an asyncio application runs
`cjb.service.aio.watch_directory(tenancy)`, anything else calls `tenancy.poll()` now and then.
No thread is started behind your back. A changed file that does not parse is reported and the
previous directory stays in force.

Resolution: a peer sockaddr from accept()/recvfrom() on an AF_INET6 socket is
``(host, port, flowinfo, scope_id)``; the scope id is the index of the tenant's interface
(`socket.if_indextoname`, cached), and the directory maps interface names to tenants. An
unknown scope gives an `Unknown` result with a message naming the interface — never an
exception into the server.

Pitfalls worth knowing:

- Bind a scoped address with the 4-tuple ``(addr, port, 0, scope_id)``; the string form
  ``"fe80::c0a8:64%t1"`` fails in `bind` (`cjb.service.aio.sockaddr_for` does it right).
- One server on ``[::]:port`` with IPV6_V6ONLY sees every tenant link; an IPv4 or global
  peer has scope id 0 and is never a tenant.
- Behind a reverse proxy the scope id is lost: use the PROXY v2 TLVs of `cjb.service.proxy_v2`.

Example::

    tenancy = Tenancy.open("/run/cjb/tenants.json")
    result = tenancy.resolve(writer.get_extra_info("peername"))
    if isinstance(result, Known):
        print(result.tenant, result.peer_text)      # acme fe80::c0a8:a%t1
    else:
        print(result.message)                        # unknown tenant on interface eth0: ...
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from cjb.service.directory import TenantDirectory
from cjb.service.resolve import (
    DEFAULT_MAX_AGE,
    InterfaceNames,
    Known,
    Resolution,
    Unknown,
    UnknownReason,
    resolve_peer,
)
from cjb.service.tenant_address import TenantPrefixes, UniqueClient
from cjb.service.watch import DEFAULT_INTERVAL, DirectoryWatcher, PollOutcome, Reloaded

__all__ = ["Known", "Resolution", "Tenancy", "Unknown", "UnknownReason"]


class Tenancy:
    def __init__(
        self,
        watcher: DirectoryWatcher,
        *,
        clock: Callable[[], float] = time.monotonic,
        index_to_name: Callable[[int], str] = socket.if_indextoname,
        name_max_age: float = DEFAULT_MAX_AGE,
    ) -> None:
        self._watcher = watcher
        self._clock = clock
        self._names = InterfaceNames(index_to_name, max_age=name_max_age)
        self._prefixes: tuple[TenantDirectory, TenantPrefixes] | None = None
        if watcher.directory is None:
            watcher.load(clock())

    @classmethod
    def open(
        cls,
        path: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        interval: float = DEFAULT_INTERVAL,
        index_to_name: Callable[[int], str] = socket.if_indextoname,
    ) -> Tenancy:
        """Read the directory file now; raises DirectoryError if it is missing or invalid."""
        watcher = DirectoryWatcher(path, clock(), interval=interval)
        return cls(watcher, clock=clock, index_to_name=index_to_name)

    @property
    def directory(self) -> TenantDirectory:
        directory = self._watcher.directory
        assert directory is not None  # loaded in __init__
        return directory

    @property
    def path(self) -> str:
        return self._watcher.path

    def resolve(self, sockaddr: object) -> Resolution:
        return resolve_peer(sockaddr, self.directory, self._names, self._clock())

    def unique_client(self, address: object) -> UniqueClient | None:
        """Reverse a tenant-unique address (`cjb.service.tenant_address`) of a tenant in the
        current directory: who is it, on which link-local address, with which IPv4."""
        directory = self.directory
        if self._prefixes is None or self._prefixes[0] is not directory:
            tenants = (e.tenant for e in directory.entries)
            self._prefixes = (directory, TenantPrefixes.build(tenants))
        return self._prefixes[1].lookup(str(address))

    def next_deadline(self) -> float:
        return self._watcher.next_deadline()

    def seconds_until_poll(self) -> float:
        return max(0.0, self._watcher.next_deadline() - self._clock())

    def poll(self) -> PollOutcome:
        outcome = self._watcher.poll(self._clock())
        if isinstance(outcome, Reloaded):
            # The gateway may have re-created links: indexes and names can have moved.
            self._names.clear()
        return outcome
