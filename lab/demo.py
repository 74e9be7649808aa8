"""`cjb lab demo`: the paper's Fig. 7 as a table.

Every site is 192.168.0.10 and runs the paper's two commands: `curl http://192.168.0.100:80/`
(the translated path: IPv4 on the LAN, IPv6 on the tenant's service link) and
`curl http://fe80::192.168.0.100%eth0:80/` (the native path: the LAN's own IPv6, on the
tenant's native link, where the service host holds the same link-local address). Each must
get its own tenant's page, from the interface of the path it took, never another tenant's.
The reference app names the interface and the path in its X-CJB-* response headers.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass

from cjb.common.netlink import netns
from cjb.gateway.dataplane.config import native_ifname
from cjb.lab.state import LabState
from cjb.lab.topology import SERVICE_IPV4, tenant_name

TENANT_IN_PAGE = re.compile(r"Hello, tenant ([A-Za-z0-9_.-]+)")

# The paper's commands, as printed in Fig. 7 (the table's column headers) ...
PAPER_TRANSLATED = f"curl http://{SERVICE_IPV4}:80/"
PAPER_NATIVE = f"curl http://fe80::{SERVICE_IPV4}%eth0:80/"
# ... and the URLs real curl takes for them: an IPv6 literal goes in brackets (RFC 3986
# §3.2.2; fe80::192.168.0.100 is the RFC 4291 §2.2 form of fe80::c0a8:64), its zone after
# "%" (RFC 6874 escapes it as %25; curl takes the bare form too); -g stops curl from
# reading the brackets as a URL glob.
TRANSLATED_URL = f"http://{SERVICE_IPV4}:80/"
NATIVE_URL = f"http://[fe80::{SERVICE_IPV4}%eth0]:80/"
# -i: print the answer's headers too, which name the interface that answered.
CURL_OPTIONS = ("-g", "-sS", "-i")


def curl_argv(url: str, timeout: float = 5.0) -> list[str]:
    return ["curl", *CURL_OPTIONS, "-m", f"{timeout:g}", url]


@dataclass(frozen=True)
class Fetch:
    url: str
    tenant: str | None  # the tenant the page greets (None: no page)
    detail: str
    ifname: str | None = None  # the service host's interface that answered (X-CJB-Interface)
    path: str | None = None  # "translated" or "native" (X-CJB-Path)
    header_tenant: str | None = None  # X-CJB-Tenant

    @property
    def answered_by(self) -> str:
        return f"{self.ifname or '?'}, {self.path or '?'}"


def parse_response(url: str, out: str) -> Fetch:
    """Split `curl -i` output into headers and page; read the tenant and the interface."""
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    headers = {}
    for line in head.splitlines()[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    m = TENANT_IN_PAGE.search(body)
    # The greeting; else the page's first line (e.g. a 403's reason); else the status line.
    first = (body.strip() or head).splitlines()
    title = m.group(0) if m else first[0][:60] if first else ""
    return Fetch(
        url,
        m.group(1) if m else None,
        title,
        headers.get("x-cjb-interface"),
        headers.get("x-cjb-path"),
        headers.get("x-cjb-tenant"),
    )


def curl(ns: str, url: str, timeout: float = 5.0) -> Fetch:
    with netns(ns):
        proc = subprocess.run(curl_argv(url, timeout), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return Fetch(url, None, f"curl exit {proc.returncode}: {proc.stderr.strip()[:60]}")
    return parse_response(url, proc.stdout)


@dataclass(frozen=True)
class Row:
    tenant: str
    translated: Fetch
    native: Fetch

    @property
    def ok(self) -> bool:
        """Each answer greets this tenant and came from this tenant's link of its path."""
        want = (
            (self.translated, self.tenant, "translated"),
            (self.native, native_ifname(self.tenant), "native"),
        )
        return all(
            f.tenant == self.tenant
            and f.header_tenant == self.tenant
            and f.ifname == ifname
            and f.path == path
            for f, ifname, path in want
        )


def run_demo(state: LabState) -> list[Row]:
    rows = []
    for k in range(1, state.tenants + 1):
        site = state.namespaces[f"site{k}"]
        translated = curl(site, TRANSLATED_URL)
        native = curl(site, NATIVE_URL)
        rows.append(Row(tenant_name(k), translated, native))
    return rows


def _cell(fetch: Fetch) -> str:
    if fetch.tenant is None and fetch.ifname is None:
        return fetch.detail
    return f"{fetch.detail} [{fetch.answered_by}]"


def render(rows: list[Row]) -> str:
    cells = [(_cell(r.translated), _cell(r.native)) for r in rows]
    w1 = max([len(PAPER_TRANSLATED), *(len(a) for a, _ in cells)])
    w2 = max([len(PAPER_NATIVE), *(len(b) for _, b in cells)])
    header = f"{'site':7} {'client':13} {PAPER_TRANSLATED:{w1}}  {PAPER_NATIVE:{w2}}  result"
    lines = [header, "-" * len(header)]
    for k, (row, (a, b)) in enumerate(zip(rows, cells, strict=True), 1):
        lines.append(
            f"{'site' + str(k):7} {'192.168.0.10':13} {a:{w1}}  {b:{w2}}  "
            f"{'ok' if row.ok else 'WRONG'}"
        )
    lines += [
        "",
        "[interface, path] = the service host's interface that answered (X-CJB-Interface,",
        "X-CJB-Path). Each site ran, in its namespace (`cjb lab exec siteK -- ...`):",
        f"  {shlex.join(curl_argv(TRANSLATED_URL))}",
        f"  {shlex.join(curl_argv(NATIVE_URL))}",
        "(real curl needs the IPv6 literal in brackets, and -g so that it does not read them",
        "as a URL glob; -i prints the headers)",
    ]
    return "\n".join(lines)


def crossed(rows: list[Row]) -> list[str]:
    """Tenants that received another tenant's page (the one failure that must never happen)."""
    bad = []
    for row in rows:
        for fetch in (row.translated, row.native):
            for named in {fetch.tenant, fetch.header_tenant} - {None, row.tenant}:
                bad.append(f"{row.tenant} got {named}'s page from {fetch.url}")
    return bad
