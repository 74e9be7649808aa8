"""Browse a tenant's LAN services from the service host (mDNS/DNS-SD over its interface).

The gateway's discovery ALG turns the LAN's A records into AAAA fe80::<ipv4> on the
tenant's service link, so a plain IPv6 mDNS browser on that one interface sees the tenant's
LAN: a printer at 192.168.0.20 appears as ``fe80::c0a8:14%<tenant interface>``. Browsing
one interface at a time is the point: another tenant's printer with the same address is on
another interface and never mixes in.

Example::

    for svc in browse("t1", ["_ipp._tcp"], timeout=3):
        print(svc.name, svc.addresses, svc.port)
        # Printer._ipp._tcp.local. ('fe80::c0a8:14%t1',) 631
    browse_tenant(tenancy.directory, "acme", ["_ipp._tcp"])  # the same, by tenant name

Blocking (python-zeroconf runs its own thread); call it off any asyncio loop.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from cjb.common.packet.ipv4 import is_translatable_unicast
from cjb.service.directory import TenantDirectory
from cjb.service.errors import DirectoryError

FE80_96 = ipaddress.IPv6Network("fe80::/96")


@dataclass(frozen=True)
class LanService:
    name: str  # "Printer._ipp._tcp.local."
    service_type: str  # "_ipp._tcp"
    server: str  # "printer.local."
    port: int
    addresses: tuple[str, ...]  # "fe80::c0a8:14%t1": ready for getaddrinfo / URLs with a zone
    txt: dict[str, str] = field(default_factory=dict)

    @property
    def lan_ipv4(self) -> tuple[ipaddress.IPv4Address, ...]:
        """The LAN addresses behind the fe80::/96 ones (what the LAN itself calls them)."""
        out = []
        for text in self.addresses:
            addr = ipaddress.IPv6Address(text.split("%", 1)[0])
            if addr in FE80_96 and is_translatable_unicast(addr.packed[12:]):
                out.append(ipaddress.IPv4Address(addr.packed[12:]))
        return tuple(out)


def browse(ifname: str, service_types: Iterable[str], timeout: float = 3.0) -> list[LanService]:
    """Every instance of `service_types` (e.g. "_ipp._tcp") seen on `ifname` within
    `timeout` seconds, resolved (SRV, TXT, AAAA). Raises OSError naming the interface when
    it does not exist."""
    try:
        index = socket.if_nametoindex(ifname)
    except OSError as exc:
        raise OSError(exc.errno, f"no interface {ifname!r} on this host: {exc.strerror}") from exc
    types = [f"{t.rstrip('.').removesuffix('.local')}.local." for t in service_types]
    found: dict[str, str] = {}
    lock = threading.Lock()

    def on_change(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is not ServiceStateChange.Removed:
            with lock:
                found[name] = service_type

    zc = Zeroconf(interfaces=[index], ip_version=IPVersion.V6Only)
    try:
        browser = ServiceBrowser(zc, types, handlers=[on_change])
        deadline = time.monotonic() + timeout
        results: dict[str, LanService] = {}
        while time.monotonic() < deadline:
            with lock:
                pending = [(n, t) for n, t in found.items() if n not in results]
            for name, stype in pending:
                svc = _resolve(zc, name, stype, ifname, index, deadline)
                if svc is not None:
                    results[name] = svc
            time.sleep(0.1)
        browser.cancel()
        return sorted(results.values(), key=lambda s: s.name)
    finally:
        zc.close()


def browse_tenant(
    directory: TenantDirectory, tenant: str, service_types: Iterable[str], timeout: float = 3.0
) -> list[LanService]:
    entry = directory.by_tenant(tenant)
    if entry is None:
        raise DirectoryError(f"tenant {tenant!r} is not in the tenant directory")
    return browse(entry.ifname, service_types, timeout)


def _resolve(
    zc: Zeroconf, name: str, stype: str, ifname: str, index: int, deadline: float
) -> LanService | None:
    info = ServiceInfo(stype, name)
    remaining_ms = max(100, int((deadline - time.monotonic()) * 1000))
    if not info.request(zc, min(remaining_ms, 1500)):
        return None
    addresses = []
    for text in info.parsed_scoped_addresses(IPVersion.V6Only):
        host, _, scope = text.partition("%")
        # zeroconf gives the scope as the index it saw the record on; name it.
        if scope in ("", str(index)) and ipaddress.IPv6Address(host).is_link_local:
            addresses.append(f"{host}%{ifname}")
        elif scope == "":
            addresses.append(host)
    if not addresses or info.port is None:
        return None
    txt = {
        k.decode("utf-8", "replace"): (v or b"").decode("utf-8", "replace")
        for k, v in info.properties.items()
    }
    return LanService(
        name=name,
        service_type=stype.removesuffix(".local."),
        server=info.server or "",
        port=info.port,
        addresses=tuple(addresses),
        txt=txt,
    )
