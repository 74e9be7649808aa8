"""`cjb lab demo`: the paper's Fig. 7 as a table.

Every site is 192.168.0.10 and asks for http://192.168.0.100/ (translated path) and for the
service host's own link-local address on its native IPv6 link; each must get its own
tenant's page, never another's.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from cjb.common.netlink import netns
from cjb.lab.control import native_link_local
from cjb.lab.state import LabState
from cjb.lab.topology import SERVICE_IPV4, tenant_name

TENANT_IN_PAGE = re.compile(r"Hello, tenant ([A-Za-z0-9_.-]+)")
IFNAME_IN_PAGE = re.compile(r"interface <(?:code|b)>([^<]+)<")


@dataclass(frozen=True)
class Fetch:
    url: str
    tenant: str | None  # the tenant the page names (None: no page)
    detail: str


def curl(ns: str, url: str, timeout: float = 5.0) -> Fetch:
    with netns(ns):
        proc = subprocess.run(
            ["curl", "-sS", "-g", "-m", str(timeout), url],
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        return Fetch(url, None, f"curl exit {proc.returncode}: {proc.stderr.strip()[:60]}")
    m = TENANT_IN_PAGE.search(proc.stdout)
    title = m.group(0) if m else proc.stdout.strip().splitlines()[0][:60] if proc.stdout else ""
    return Fetch(url, m.group(1) if m else None, title)


@dataclass(frozen=True)
class Row:
    tenant: str
    translated: Fetch
    native: Fetch

    @property
    def ok(self) -> bool:
        return self.translated.tenant == self.tenant and self.native.tenant == self.tenant


def run_demo(state: LabState) -> list[Row]:
    rows = []
    for k in range(1, state.tenants + 1):
        site = state.namespaces[f"site{k}"]
        translated = curl(site, f"http://{SERVICE_IPV4}/")
        ll = native_link_local(state, k)
        native = (
            curl(site, f"http://[{ll}%eth0]/")
            if ll is not None
            else Fetch("-", None, "service host has no link-local on the native link")
        )
        rows.append(Row(tenant_name(k), translated, native))
    return rows


def render(rows: list[Row]) -> str:
    header = (
        f"{'site':7} {'client':14} {'GET http://192.168.0.100/':32} "
        f"{'GET http://[<native link-local>%eth0]/':40} result"
    )
    lines = [header, "-" * len(header)]
    for k, row in enumerate(rows, 1):
        lines.append(
            f"{'site' + str(k):7} {'192.168.0.10':14} {row.translated.detail[:32]:32} "
            f"{row.native.detail[:40]:40} {'ok' if row.ok else 'WRONG'}"
        )
    urls = sorted({r.native.url for r in rows})
    lines.append("")
    lines.append("native URLs: " + ", ".join(urls))
    return "\n".join(lines)


def crossed(rows: list[Row]) -> list[str]:
    """Tenants that received another tenant's page (the one failure that must never happen)."""
    bad = []
    for row in rows:
        for fetch in (row.translated, row.native):
            if fetch.tenant is not None and fetch.tenant != row.tenant:
                bad.append(f"{row.tenant} got {fetch.tenant}'s page from {fetch.url}")
    return bad
