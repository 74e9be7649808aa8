"""Discovery in the lab: each tenant's cloud catalog, its pages, the LAN printers,
and the demo's second table.

Set-up (enrolled lab only, before the agents start, so the catalog comes with enrollment):
  - tenant K's catalog, set with `cjb gateway catalog set`: "Cloud Files (tenantK)", an
    `_http._tcp` service on port 80 that is also a UPnP MediaServer whose description is
    DOCROOT/tenantK/upnp/description.xml, served by the reference app;
  - in every site, `python -m cjb.lab.printer` registers "Printer (tenantK)" (`_ipp._tcp`) at
    192.168.0.20 (the same address on every site, like the clients).

The demo then checks both directions for every tenant, all browses in parallel:
  (a) siteK browses `_http._tcp` on its LAN: "Cloud Files (tenantK)" at 192.168.0.100:80,
      nothing of another tenant;
  (b) the service host browses `_ipp._tcp` on tenant K's link: "Printer (tenantK)" at
      fe80::c0a8:14%<K's link>, nothing of another tenant.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cjb.lab import browse
from cjb.lab.state import LabState
from cjb.lab.topology import LAN_ADDRESS, PRINTER_ADDRESS, SERVICE_IPV4, tenant_name

CLOUD_TYPE = "_http._tcp"
PRINTER_TYPE = "_ipp._tcp"
MEDIA_SERVER = "urn:schemas-upnp-org:device:MediaServer:1"
DESCRIPTION_PATH = "/upnp/description.xml"
BROWSE_SECONDS = 3.0
RELAY_TIMEOUT = 15.0  # seconds for a fresh lab's relays to start announcing
TENANT_IN_NAME = re.compile(r"\((tenant[0-9]+)\)")


class DiscoverySetupError(Exception):
    """Setting a tenant's catalog failed; the message carries the command's output."""


def cloud_instance(tenant: str) -> str:
    return f"Cloud Files ({tenant})"


def printer_instance(tenant: str) -> str:
    return f"Printer ({tenant})"


def catalog(tenant: str) -> list[dict[str, object]]:
    """Tenant K's cloud services (CatalogService, as JSON)."""
    return [
        {
            "instance": cloud_instance(tenant),
            "service_type": CLOUD_TYPE,
            "port": 80,
            "txt": {"path": "/"},
            "upnp_device_type": MEDIA_SERVER,
            "upnp_description_path": DESCRIPTION_PATH,
        }
    ]


def description_xml(tenant: str) -> str:
    name = html.escape(cloud_instance(tenant))
    return (
        '<?xml version="1.0"?>\n<root xmlns="urn:schemas-upnp-org:device-1-0">'
        f"<device><deviceType>{MEDIA_SERVER}</deviceType>"
        f"<friendlyName>{name}</friendlyName></device></root>\n"
    )


def index_html(tenant: str) -> str:
    # A tenant folder replaces the reference app's generated page: keep its greeting, which
    # the Fig. 7 table and other lab tests read.
    t = html.escape(tenant)
    return (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>CJB tenant {t}</title>'
        f"</head>\n<body>\n<h1>Hello, tenant {t}</h1>\n"
        f'<p>Cloud files of tenant {t}. UPnP: <a href="{DESCRIPTION_PATH}">description</a>.</p>\n'
        "</body></html>\n"
    )


def write_docroot(docroot: Path, tenants: int) -> None:
    for k in range(1, tenants + 1):
        tenant = tenant_name(k)
        root = docroot / tenant
        (root / "upnp").mkdir(parents=True, exist_ok=True)
        (root / "index.html").write_text(index_html(tenant))
        (root / DESCRIPTION_PATH.lstrip("/")).write_text(description_xml(tenant))


def set_catalogs(state_dir: Path, run_dir: Path, tenants: int) -> None:
    """What `cjb gateway catalog set` does, for every tenant (each bumps its config_version).

    The command itself runs once, for tenant 1, so the lab keeps exercising it; the others
    take its two steps (validate the file as CatalogService, Registry.set_catalog) in this
    process: a command per tenant cost ~0.5 s of interpreter start each, 50 s at 100."""
    from cjb.gateway.control.catalog import catalog_doc
    from cjb.gateway.control.errors import ControlError
    from cjb.gateway.control.registry import Registry
    from cjb.gateway.control.statedir import StateDir

    paths = {}
    for k in range(1, tenants + 1):
        tenant = tenant_name(k)
        path = paths[tenant] = run_dir / f"catalog-{tenant}.json"
        path.write_text(json.dumps(catalog(tenant), indent=2) + "\n")
    first = tenant_name(1)
    argv = [sys.executable, "-m", "cjb.cli", "gateway", "catalog", "set",
            "--state-dir", str(state_dir), first, str(paths[first])]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DiscoverySetupError(f"cjb gateway catalog set {first} failed: {proc.stderr.strip()}")
    rest = [t for t in paths if t != first]
    if not rest:
        return
    with Registry.open(StateDir(state_dir).registry) as reg:
        for tenant in rest:
            try:
                reg.set_catalog(tenant, catalog_doc(paths[tenant].read_bytes()))
            except ControlError as exc:
                raise DiscoverySetupError(f"catalog of {tenant}: {exc}") from None


def printer_argv(k: int) -> list[str]:
    name = printer_instance(tenant_name(k))
    return [sys.executable, "-m", "cjb.lab.printer", "--address", str(PRINTER_ADDRESS.ip),
            "--name", name]  # fmt: skip


def service_ifname(state: LabState, tenant: str) -> str:
    """Tenant's link in the service namespace, from the directory the gateway wrote."""
    from cjb.service.directory import parse_directory

    path = state.run_dir / "tenants.json"
    try:
        entry = parse_directory(path.read_bytes(), str(path)).by_tenant(tenant)
    except (OSError, ValueError):
        entry = None
    return entry.ifname if entry is not None else tenant


# -- the demo's checks ------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One direction of one tenant: what was found, and whether it is what must be."""

    found: tuple[browse.Found, ...]
    error: str | None
    expected: browse.Found

    @property
    def ok(self) -> bool:
        return self.error is None and self.expected in self.found and not self.foreign

    @property
    def foreign(self) -> list[str]:
        """Names of other tenants' services seen here (the failure that must never happen)."""
        own = TENANT_IN_NAME.search(self.expected.name)
        mine = own.group(1) if own else None
        return [
            f.name
            for f in self.found
            if (m := TENANT_IN_NAME.search(f.name)) is not None and m.group(1) != mine
        ]

    def detail(self) -> str:
        if self.error is not None:
            return self.error[:40]
        hit = next((f for f in self.found if f.name == self.expected.name), None)
        if hit is None:
            return f"not found ({len(self.found)} other)"
        where = ",".join(hit.addresses)
        return f"{hit.name.split('._')[0]} @ {where}:{hit.port}"


@dataclass(frozen=True)
class DiscoveryRow:
    tenant: str
    ifname: str
    cloud_on_lan: Side  # (a)
    printer_in_cloud: Side  # (b)

    @property
    def ok(self) -> bool:
        return self.cloud_on_lan.ok and self.printer_in_cloud.ok


def _side(result: list[browse.Found] | str, expected: browse.Found) -> Side:
    if isinstance(result, str):
        return Side((), result, expected)
    return Side(tuple(result), None, expected)


def relay_notes(state: LabState) -> dict[str, str]:
    """Appliance -> the agent's discovery note ("on: 1 service(s), tunnel up", "off: …")."""
    notes = {}
    for k in range(1, state.tenants + 1):
        path = state.run_dir / f"appliance{k}" / "status.json"
        try:
            notes[f"appliance{k}"] = str(json.loads(path.read_text()).get("discovery"))
        except (OSError, ValueError):
            notes[f"appliance{k}"] = "no status yet"
    return notes


def wait_relays(state: LabState, timeout: float = RELAY_TIMEOUT) -> dict[str, str]:
    """Wait until every agent's relay announces (a fresh lab starts them after enrolling);
    returns the notes of those that are still off."""
    deadline = time.monotonic() + timeout
    while True:
        off = {a: n for a, n in relay_notes(state).items() if not n.startswith("on:")}
        if not off or time.monotonic() >= deadline:
            return off
        time.sleep(0.2)


def run_discovery(state: LabState, seconds: float = BROWSE_SECONDS) -> list[DiscoveryRow]:
    """Both directions for every tenant, every browse at once (a few seconds in all)."""
    pending = []
    for k in range(1, state.tenants + 1):
        tenant = tenant_name(k)
        ifname = service_ifname(state, tenant)
        wait = ("--timeout", str(seconds))
        lan = browse.start(state.namespaces[f"site{k}"], "lan", "--address",
                           str(LAN_ADDRESS.ip), "--type", CLOUD_TYPE, *wait)  # fmt: skip
        svc = browse.start(state.namespaces["service"], "service", "--ifname", ifname,
                           "--type", PRINTER_TYPE, *wait)  # fmt: skip
        pending.append((tenant, ifname, lan, svc))
    rows = []
    for tenant, ifname, lan, svc in pending:
        cloud = browse.Found(
            f"{cloud_instance(tenant)}.{CLOUD_TYPE}.local.", (str(SERVICE_IPV4),), 80
        )
        printer = browse.Found(
            f"{printer_instance(tenant)}.{PRINTER_TYPE}.local.",
            (f"fe80::{_hex_pair()}%{ifname}",),
            631,
        )
        rows.append(
            DiscoveryRow(
                tenant,
                ifname,
                _side(browse.finish(lan, seconds + 30), cloud),
                _side(browse.finish(svc, seconds + 30), printer),
            )
        )
    return rows


def _hex_pair() -> str:
    """192.168.0.20 -> "c0a8:14": the printer as the ALG names it (fe80::/96 + IPv4)."""
    b = PRINTER_ADDRESS.ip.packed
    return f"{b[0] << 8 | b[1]:x}:{b[2] << 8 | b[3]:x}"


def render(rows: list[DiscoveryRow]) -> str:
    header = (
        f"{'tenant':8} {'siteK browses _http._tcp (cloud on the LAN)':46} "
        f"{'service host browses _ipp._tcp on K link':50} result"
    )
    lines = ["", "discovery: mDNS in both directions", header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row.tenant:8} {row.cloud_on_lan.detail()[:46]:46} "
            f"{row.printer_in_cloud.detail()[:50]:50} {'ok' if row.ok else 'WRONG'}"
        )
    return "\n".join(lines)


def crossed(rows: list[DiscoveryRow]) -> list[str]:
    bad = []
    for row in rows:
        for where, side in (("site LAN", row.cloud_on_lan), (row.ifname, row.printer_in_cloud)):
            bad += [f"{row.tenant} saw {name} on {where}" for name in side.foreign]
    return bad
