"""Discovery in the lab: both ways across the enrolled junction, per tenant.

    siteK: client 192.168.0.10 + "Printer (tenantK)" 192.168.0.20 (zeroconf _ipp._tcp,
           UPnP description on :8080, SSDP)
      │ LAN
    applianceK: br-lan 192.168.0.2 — agent's discovery relay announces "Cloud Files
           (tenantK)" (_http._tcp, UPnP MediaServer) at 192.168.0.100; gate + rate limit
      ║ WireGuard + VXLAN
    gateway (translator + mDNS/SSDP ALG) ── tenantK link ── service (reference app; browses)

One enrolled lab (2 tenants) for every root case in the module; the fast cases at the top
check the demo's verdicts on made-up results.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import labkit
import pytest
from stormkit import COUNT_WAN, msearch_v6_script, storm_script

from cjb.common.control.protocol import CatalogService
from cjb.lab import browse, discovery
from cjb.lab import enrolled as enrolled_lab
from cjb.lab.browse import Found
from cjb.lab.control import down, up
from cjb.lab.state import LabState
from cjb.lab.topology import APPLIANCE_LAN_ADDRESS, PRINTER_ADDRESS, LabNames, lab_spec

TENANTS = 2

# -- fast: the demo's verdicts -------------------------------------------------------------


def _row(lan: list[Found], svc: list[Found], tenant: str = "tenant1") -> discovery.DiscoveryRow:
    cloud = Found(f"Cloud Files ({tenant})._http._tcp.local.", ("192.168.0.100",), 80)
    printer = Found(f"Printer ({tenant})._ipp._tcp.local.", (f"fe80::c0a8:14%{tenant}",), 631)
    return discovery.DiscoveryRow(
        tenant,
        tenant,
        discovery.Side(tuple(lan), None, cloud),
        discovery.Side(tuple(svc), None, printer),
    )


def test_demo_verdicts_ok_missing_and_crossed() -> None:
    cloud1 = Found("Cloud Files (tenant1)._http._tcp.local.", ("192.168.0.100",), 80)
    printer1 = Found("Printer (tenant1)._ipp._tcp.local.", ("fe80::c0a8:14%tenant1",), 631)
    printer2 = Found("Printer (tenant2)._ipp._tcp.local.", ("fe80::c0a8:14%tenant1",), 631)
    assert _row([cloud1], [printer1]).ok
    assert discovery.crossed([_row([cloud1], [printer1])]) == []
    wrong_address = Found(printer1.name, ("fe80::c0a8:14%tenant2",), 631)
    assert not _row([cloud1], [wrong_address]).ok
    assert not _row([], [printer1]).ok
    leaked = _row([cloud1], [printer1, printer2])
    assert not leaked.ok
    assert discovery.crossed([leaked]) == [
        "tenant1 saw Printer (tenant2)._ipp._tcp.local. on tenant1"
    ]
    assert "WRONG" in discovery.render([leaked]) and "ok" in discovery.render(
        [_row([cloud1], [printer1])]
    )
    failed = discovery.DiscoveryRow(
        "tenant1",
        "tenant1",
        discovery.Side((), "browse: exit 1: boom", cloud1),
        _row([], []).printer_in_cloud,
    )
    assert not failed.ok and "exit 1" in discovery.render([failed])


def test_catalog_is_a_valid_catalog_and_docroot_serves_its_description(tmp_path: Path) -> None:
    (svc,) = [CatalogService.model_validate(s) for s in discovery.catalog("tenant3")]
    assert svc.instance == "Cloud Files (tenant3)" and svc.port == 80
    discovery.write_docroot(tmp_path, 2)
    desc = (tmp_path / "tenant2" / "upnp" / "description.xml").read_text()
    assert "Cloud Files (tenant2)" in desc and svc.upnp_device_type in desc
    # The tenant folder replaces the generated page: the greeting the Fig. 7 table reads stays.
    assert "Hello, tenant tenant1<" in (tmp_path / "tenant1" / "index.html").read_text()


def test_discovery_addresses_are_on_the_lan_and_clear_of_the_probed_ones() -> None:
    spec = lab_spec(LabNames("beef"), 1, False, discovery=True)
    by_name = {ns.name: ns for ns in spec.namespaces}
    eth0 = next(lk for lk in by_name["cjblabbeef-site1"].links if lk.name == "eth0")
    bridge = next(lk for lk in by_name["cjblabbeef-appliance1"].links if lk.name == "br-lan")
    assert PRINTER_ADDRESS in eth0.addresses and APPLIANCE_LAN_ADDRESS in bridge.addresses
    used = {a.ip.packed[-1] for a in (*eth0.addresses, *bridge.addresses)}
    assert 100 not in used  # the agent ARP-probes .100 first for the service address
    plain = {ns.name: ns for ns in lab_spec(LabNames("beef"), 1, False).namespaces}
    assert not [lk for lk in plain["cjblabbeef-appliance1"].links if lk.name == "br-lan"]


# -- the enrolled lab -------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab() -> Iterator[LabState]:
    labkit.require("nft", "curl")
    if not os.path.isdir("/sys/module/wireguard"):
        labkit.require("wireguard-go")
    pytest.importorskip("zeroconf", reason="pip install 'cjb[appliance]' (python-zeroconf)")
    state = up(TENANTS, log=lambda _m: None, transport="wireguard")
    try:
        _wait_relays(state)
        # A catalog change for tenant 2 now: it reaches the running agent with its next
        # heartbeat (config_version bump), while the cases below run; the last one checks.
        # A type nothing else here browses, so the cases before it see no difference.
        CATALOG_CHANGED.append(time.monotonic())
        _set_catalog(state, "tenant2", [*discovery.catalog("tenant2"), SHARE])
        yield state
    finally:
        remaining = down(log=lambda _m: None, only=state.run_id)
        assert not remaining, f"left behind: {remaining}"


SHARE = {"instance": "Cloud Share (tenant2)", "service_type": "_smb._tcp", "port": 445}
CATALOG_CHANGED: list[float] = []


def _set_catalog(state: LabState, tenant: str, services: list[dict[str, object]]) -> None:
    path = state.run_dir / f"catalog-{tenant}-changed.json"
    path.write_text(json.dumps(services))
    state_dir = str(enrolled_lab.gateway_state_dir(state.run_dir))
    argv = [sys.executable, "-m", "cjb.cli", "gateway", "catalog", "set",
            "--state-dir", state_dir, tenant, str(path)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr


def _status(state: LabState, k: int) -> dict[str, object]:
    data: dict[str, object] = json.loads(
        (state.run_dir / f"appliance{k}" / "status.json").read_text()
    )
    return data


def _wait_relays(state: LabState, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    notes: list[object] = []
    while time.monotonic() < deadline:
        notes = [_status(state, k).get("discovery") for k in range(1, TENANTS + 1)]
        if all(isinstance(n, str) and n.startswith("on: 1 service") for n in notes):
            time.sleep(2)  # zeroconf probes and announces (RFC 6762 §8: ~1.75 s)
            return
        time.sleep(0.2)
    raise AssertionError(f"discovery relays not on after {timeout}s: {notes}")


def _by_tenant(state: LabState) -> dict[str, discovery.DiscoveryRow]:
    return {r.tenant: r for r in discovery.run_discovery(state)}


@pytest.mark.root
@pytest.mark.slow
def test_both_directions_for_every_tenant_and_nothing_crosses(lab: LabState) -> None:
    rows = _by_tenant(lab)
    print(discovery.render(list(rows.values())))
    assert discovery.crossed(list(rows.values())) == []
    for k in range(1, TENANTS + 1):
        row = rows[f"tenant{k}"]
        # (a) site K: exactly its own cloud service, at the service address and port 80.
        assert row.cloud_on_lan.found == (row.cloud_on_lan.expected,), row
        assert row.cloud_on_lan.expected.addresses == ("192.168.0.100",)
        # (b) the service host, on K's link only: K's printer at fe80::<printer v4>%<link>.
        assert row.printer_in_cloud.found == (row.printer_in_cloud.expected,), row
        assert row.printer_in_cloud.expected.addresses == (f"fe80::c0a8:14%{row.ifname}",)


@pytest.mark.root
@pytest.mark.slow
def test_site1_fetches_its_page_through_the_service_it_found(lab: LabState) -> None:
    row = _by_tenant(lab)["tenant1"]
    (svc,) = row.cloud_on_lan.found
    url = f"http://{svc.addresses[0]}:{svc.port}/"
    page = labkit.run_in(lab.namespaces["site1"], ["curl", "-sS", "-m", "10", url])
    assert page.returncode == 0, page.stderr
    assert "Hello, tenant tenant1<" in page.stdout


MSEARCH_V4 = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("192.168.0.10", 0))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("192.168.0.10"))
msg = (b"M-SEARCH * HTTP/1.1\\r\\nHOST: 239.255.255.250:1900\\r\\n"
       b"MAN: \\"ssdp:discover\\"\\r\\nMX: 1\\r\\nST: " + sys.argv[1].encode() + b"\\r\\n\\r\\n")
s.settimeout(0.5)
end = time.monotonic() + 8
while time.monotonic() < end:
    s.sendto(msg, ("239.255.255.250", 1900))
    try:
        data, addr = s.recvfrom(4096)
    except TimeoutError:
        continue
    if sys.argv[1].encode() in data:
        print(addr[0]); print(data.decode()); break
"""


@pytest.mark.root
@pytest.mark.slow
def test_lan_msearch_gets_the_cloud_device_and_its_location_works(lab: LabState) -> None:
    for k in range(1, TENANTS + 1):
        site = lab.namespaces[f"site{k}"]
        out = labkit.python_in(site, MSEARCH_V4, discovery.MEDIA_SERVER)
        assert out.returncode == 0, out.stderr
        m = re.search(r"^LOCATION: (\S+)\r?$", out.stdout, re.MULTILINE | re.IGNORECASE)
        assert m is not None, out.stdout
        assert m.group(1) == "http://192.168.0.100:80/upnp/description.xml"
        got = labkit.run_in(site, ["curl", "-sS", "-m", "10", m.group(1)])
        assert got.returncode == 0, got.stderr
        assert f"Cloud Files (tenant{k})" in got.stdout and discovery.MEDIA_SERVER in got.stdout


MSEARCH_V6 = msearch_v6_script("::")


@pytest.mark.root
@pytest.mark.slow
def test_service_host_msearch_on_tenant1_gets_its_printer_description(lab: LabState) -> None:
    service = lab.namespaces["service"]
    ifname = discovery.service_ifname(lab, "tenant1")
    out = labkit.python_in(service, MSEARCH_V6, ifname)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("fe80::c0a8:14"), out.stdout
    assert "LOCATION: http://[fe80::c0a8:14]:8080/description.xml" in out.stdout, out.stdout
    url = f"http://[fe80::c0a8:14%25{ifname}]:8080/description.xml"
    got = labkit.run_in(service, ["curl", "-sS", "-g", "-m", "10", url])
    assert got.returncode == 0, got.stderr
    assert "Printer (tenant1)" in got.stdout and "Printer (tenant2)" not in got.stdout


HEARTBEAT_SECONDS = 30  # gateway.toml default, which the lab keeps
WAN_PPS, WAN_BURST = 20.0, 40.0  # RelayConfig defaults, which the agent uses


@pytest.mark.root
@pytest.mark.slow
def test_mdns_storm_on_one_lan_is_bounded_on_the_wan_and_other_tenants_still_browse(
    lab: LabState,
) -> None:
    """10,000 mDNS queries in about a second on site1's LAN: what reaches the gateway (the
    tenant's VXLAN port, after WireGuard) stays within the relay's rate bound, and tenant 2
    still finds its services both ways while it happens."""
    from cjb.appliance.discovery.relay import RelayConfig

    assert (RelayConfig.wan_pps, RelayConfig.wan_burst) == (WAN_PPS, WAN_BURST)
    before = _status(lab, 1)["counters"]
    assert isinstance(before, dict)
    counter = labkit.spawn_python(lab.namespaces["gateway"], COUNT_WAN, "vx-tenant1", "6")
    try:
        assert counter.stdout is not None and counter.stdout.readline().strip() == "ready"
        pending = [
            browse.start(lab.namespaces["site2"], "lan", "--address", "192.168.0.10",
                                   "--type", "_http._tcp", "--timeout", "3"),
            browse.start(lab.namespaces["service"], "service", "--ifname",
                                   discovery.service_ifname(lab, "tenant2"), "--type",
                                   "_ipp._tcp", "--timeout", "3"),
        ]  # fmt: skip
        storm = labkit.python_in(lab.namespaces["site1"], storm_script("192.168.0.10"))
        assert storm.returncode == 0, storm.stderr
        elapsed = float(storm.stdout)
        out, _ = counter.communicate(timeout=30)
    finally:
        if counter.poll() is None:
            counter.kill()
            counter.communicate()
    crossed = int(out.strip())
    lan, svc = (browse.finish(p) for p in pending)
    time.sleep(2.5)  # the agent writes its counters every tick (1 s)
    after = _status(lab, 1)["counters"]
    assert isinstance(after, dict)
    limited = after.get("discovery_lan-to-wan-drop-rate-limit", 0) - before.get(
        "discovery_lan-to-wan-drop-rate-limit", 0
    )
    bound = WAN_BURST + WAN_PPS * (elapsed + 1.0)
    print(
        f"storm: 10000 in {elapsed:.2f}s; {crossed} reached the gateway (bound {bound:.0f}); "
        f"{limited} rate-limited at the appliance"
    )
    assert 0 < crossed <= bound
    assert limited >= 5000  # the rest never reached the gate (socket queue) or crossed
    assert isinstance(lan, list) and isinstance(svc, list), (lan, svc)
    assert [f.name for f in lan] == ["Cloud Files (tenant2)._http._tcp.local."], lan
    assert [(f.name, f.addresses) for f in svc] == [
        ("Printer (tenant2)._ipp._tcp.local.",
         (f"fe80::c0a8:14%{discovery.service_ifname(lab, 'tenant2')}",)),
    ], svc  # fmt: skip
    # And tenant 1 itself recovers: its browse works again after the storm.
    assert _by_tenant(lab)["tenant1"].ok


@pytest.mark.root
@pytest.mark.slow
def test_catalog_change_reaches_the_running_agent_and_only_its_lan(lab: LabState) -> None:
    """`cjb gateway catalog set` (in the fixture) bumps tenant 2's config_version; the
    agent fetches it at its next heartbeat and announces the new service without a
    restart; site 1 never sees it."""
    pid = _status(lab, 2)["pid"]
    deadline = CATALOG_CHANGED[0] + HEARTBEAT_SECONDS + 15
    while time.monotonic() < deadline:
        if str(_status(lab, 2).get("discovery")).startswith("on: 2 service"):
            break
        time.sleep(0.5)
    status = _status(lab, 2)
    assert str(status.get("discovery")).startswith("on: 2 service"), status.get("discovery")
    assert status["pid"] == pid  # the same agent process: no restart
    time.sleep(2)  # zeroconf probes and announces the new name (RFC 6762 §8)
    pending = [
        browse.start(lab.namespaces[f"site{k}"], "lan", "--address", "192.168.0.10",
                     "--type", "_smb._tcp", "--timeout", "3")
        for k in (1, 2)
    ]  # fmt: skip
    site1, site2 = (browse.finish(p) for p in pending)
    assert site2 == [Found("Cloud Share (tenant2)._smb._tcp.local.", ("192.168.0.100",), 445)]
    assert site1 == []
