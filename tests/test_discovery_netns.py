"""Discovery across the junction on real links, with real zeroconf, SSDP, nftables and the
real translator worker (AF_PACKET) in between.

  lan ns              appliance ns                     gateway ns           service ns
  l0 192.168.0.20 -- lp -+ br0 192.168.0.2          (TenantWorker:       s0 fe80::c0a8:64
  printer: zeroconf      |  DiscoveryRelay:           Translator + ALG)    HTTP [::]:80
  _ipp._tcp, SSDP,       |  zeroconf, SSDP, gate
  HTTP :8080 desc.xml    +- tp ---------------------- gl ========== gs ---- s0
                         nft: discovery UDP lp<->tp only via the gate
  lan2 ns (tenant 2, the same 192.168.0.20, "Printer Two", no appliance)
  m0 192.168.0.20 ----------------------------------- hl ========== hs ---- s2 fe80::c0a8:64

Namespaces and links carry the prefix `cjbd<run id>`; everything is removed on every exit.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from stormkit import COUNT_WAN, msearch_v6_script, storm_script

pytestmark = [pytest.mark.root, pytest.mark.slow]

RID = secrets.token_hex(2)
NS = {k: f"cjbd{RID}-{k}" for k in ("lan", "app", "gw", "svc", "lan2")}
LINK = {k: f"d{RID}{k}" for k in ("l0", "lp", "tp", "gl", "gs", "s0", "m0", "hl", "hs", "s2")}
WAN_PPS, WAN_BURST = 50, 50
ROOT = Path(__file__).resolve().parent.parent


def sh(*argv: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=60)


def spawn(ns: str, code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def py(ns: str, code: str, *args: str, timeout: float = 60) -> str:
    out = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def build(tmp: Path) -> None:
    for ns in NS.values():
        sh("ip", "netns", "add", ns)
    pairs = [("l0", "lan", "lp", "app"), ("tp", "app", "gl", "gw"), ("gs", "gw", "s0", "svc"),
             ("m0", "lan2", "hl", "gw"), ("hs", "gw", "s2", "svc")]  # fmt: skip
    for a, ans, b, bns in pairs:
        sh("ip", "link", "add", LINK[a], "netns", NS[ans], "type", "veth", "peer", "name",
           LINK[b], "netns", NS[bns])  # fmt: skip
    for ns in ("lan", "app", "gw", "lan2"):
        sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", ns=NS[ns])
        sh("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1", ns=NS[ns])
    for name, ns in (("l0", "lan"), ("lp", "app"), ("tp", "app"), ("gl", "gw"), ("gs", "gw"),
                     ("s0", "svc"), ("m0", "lan2"), ("hl", "gw"), ("hs", "gw"),
                     ("s2", "svc")):  # fmt: skip
        # Offloads off: AF_PACKET readers must see finished checksums (worker.py).
        sh("ethtool", "-K", LINK[name], "tx", "off", "rx", "off", ns=NS[ns], check=False)
    for gs, s0 in (("gs", "s0"), ("hs", "s2")):  # one service link per tenant
        sh("ip", "link", "set", LINK[gs], "mtu", "1520", ns=NS["gw"])
        sh("ip", "link", "set", LINK[s0], "mtu", "1520", "addrgenmode", "none", ns=NS["svc"])
        sh("ip", "-6", "addr", "add", "fe80::c0a8:64/64", "dev", LINK[s0], "nodad", ns=NS["svc"])
    # Tenant 2's LAN uses the same addresses as tenant 1's (and has no appliance here).
    sh("ip", "addr", "add", "192.168.0.20/24", "dev", LINK["l0"], ns=NS["lan"])
    sh("ip", "addr", "add", "192.168.0.20/24", "dev", LINK["m0"], ns=NS["lan2"])
    sh("ip", "link", "add", "br0", "type", "bridge", ns=NS["app"])
    for port in ("lp", "tp"):
        sh("ip", "link", "set", LINK[port], "master", "br0", ns=NS["app"])
    sh("ip", "addr", "add", "192.168.0.2/24", "dev", "br0", ns=NS["app"])
    for name, ns in (("l0", "lan"), ("lp", "app"), ("tp", "app"), ("br0", "app"), ("gl", "gw"),
                     ("gs", "gw"), ("s0", "svc"), ("lo", "lan"), ("lo", "svc"), ("m0", "lan2"),
                     ("hl", "gw"), ("hs", "gw"), ("s2", "svc"), ("lo", "lan2")):  # fmt: skip
        sh("ip", "link", "set", LINK.get(name, name), "up", ns=NS[ns])
    sh("ip", "route", "add", "224.0.0.0/4", "dev", LINK["l0"], ns=NS["lan"])
    sh("ip", "route", "add", "224.0.0.0/4", "dev", LINK["m0"], ns=NS["lan2"])
    sh("ip", "route", "add", "224.0.0.0/4", "dev", "br0", ns=NS["app"])
    sh("ip", "-6", "route", "add", "ff02::/16", "dev", LINK["s0"], "table", "local", ns=NS["svc"],
       check=False)  # fmt: skip
    (tmp / "www" / "upnp").mkdir(parents=True)
    (tmp / "www" / "index.html").write_text("cloud page for t1\n")
    (tmp / "www" / "upnp" / "description.xml").write_text("<root>cloud media server</root>\n")
    for www, text in (("lanwww", "lan printer"), ("lan2www", "tenant 2 printer")):
        (tmp / www).mkdir()
        (tmp / www / "desc.xml").write_text(f"<root>{text}</root>\n")


def teardown() -> list[str]:
    for ns in NS.values():
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line for line in left.splitlines() if f"cjbd{RID}-" in line]


TRANSLATOR = """
    import asyncio, json, signal, sys
    from cjb.gateway.dataplane.router import FrameRouter, Port
    from cjb.gateway.dataplane.worker import TenantWorker, open_port
    from cjb.gateway.xlat import Translator, XlatConfig
    from cjb.gateway.xlat.alg import snapshot
    router = FrameRouter(Translator(XlatConfig()), native=False)
    worker = TenantWorker(router, {Port.TUNNEL: open_port(sys.argv[1]),
                                   Port.SERVICE: open_port(sys.argv[2])})
    loop = asyncio.new_event_loop()
    worker.start(loop)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    print("ready", flush=True)
    loop.run_forever()
    print(json.dumps({"router": router.counters.as_dict(), "alg": snapshot()}), flush=True)
"""

PRINTER = """
    import functools, http.server, ipaddress, random, select, socket, sys, threading, time
    from zeroconf import IPVersion, ServiceInfo, Zeroconf
    from cjb.appliance.discovery.ssdp import SsdpAdvertiser, devices_for
    from cjb.common.control.protocol import CatalogService
    www, instance = sys.argv[1], sys.argv[2]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=www)
    httpd = http.server.ThreadingHTTPServer(("192.168.0.20", 8080), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    zc = Zeroconf(interfaces=["192.168.0.20"], ip_version=IPVersion.V4Only)
    zc.register_service(ServiceInfo("_ipp._tcp.local.", f"{instance}._ipp._tcp.local.", port=631,
        properties={"rp": "ipp/print"}, server="printer.local.",
        addresses=[socket.inet_aton("192.168.0.20")]))
    # The printer's UPnP side: the same sans-IO advertiser the appliance uses.
    svc = CatalogService(instance=instance, service_type="_ipp._tcp", port=8080,
        upnp_device_type="urn:schemas-upnp-org:device:Printer:1",
        upnp_description_path="/desc.xml")
    adv = SsdpAdvertiser(random.Random(1), time.monotonic())
    adv.set_devices(devices_for("lan", ipaddress.IPv4Address("192.168.0.20"), [svc]), 0)
    adv.activate(time.monotonic())
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 1900))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                 socket.inet_aton("239.255.255.250") + socket.inet_aton("192.168.0.20"))
    print("ready", flush=True)
    while True:
        data, addr = s.recvfrom(4096)
        for out in adv.on_search(data, addr, time.monotonic()):
            s.sendto(out.payload, out.addr)   # no MX delay needed in a test
"""

RELAY = """
    import ipaddress, json, signal, sys, threading
    from cjb.appliance.discovery import DiscoveryRelay, RelayConfig
    from cjb.common.control.protocol import CatalogService
    lp, tp, pps, burst, status_path = sys.argv[1:6]
    catalog = [CatalogService(instance="Cloud Web", service_type="_http._tcp", port=80,
        txt={"path": "/"}, upnp_device_type="urn:schemas-upnp-org:device:MediaServer:1",
        upnp_description_path="/upnp/description.xml")]
    relay = DiscoveryRelay(RelayConfig(tenant="t1",
        service_ipv4=ipaddress.IPv4Address("192.168.0.100"), lan_ifname="br0",
        lan_address=ipaddress.IPv4Address("192.168.0.2"), lan_ports=(lp,), tunnel_ifname=tp,
        wan_pps=float(pps), wan_burst=float(burst)), catalog)
    relay.start()
    relay.tunnel_up()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    def commands():
        # The agent's calls, driven by the test: tunnel state and catalog changes.
        actions = {"down": relay.tunnel_down, "up": relay.tunnel_up,
                   "empty": lambda: relay.update_catalog([]),
                   "full": lambda: relay.update_catalog(catalog),
                   "refresh": relay.refresh_ports}
        for line in sys.stdin:
            actions[line.strip()]()
            print("ok", flush=True)
    threading.Thread(target=commands, daemon=True).start()
    print("ready", flush=True)
    while not done.wait(0.5):
        open(status_path, "w").write(json.dumps(relay.status()))
    relay.stop()
    open(status_path, "w").write(json.dumps(relay.status()))
"""


RELAY_PROC: list[subprocess.Popen[str]] = []


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces, veth links and nftables tables")
    missing = [p for p in ("ip", "nft", "curl", "ethtool") if shutil.which(p) is None]
    if missing:
        pytest.skip(f"missing {missing}: apt-get install -y --no-install-recommends ...")
    tmp = tmp_path_factory.mktemp("disc")
    procs: list[subprocess.Popen[str]] = []
    try:
        build(tmp)
        procs.append(spawn(NS["gw"], TRANSLATOR, LINK["gl"], LINK["gs"]))
        procs.append(
            subprocess.Popen(
                ["ip", "netns", "exec", NS["svc"], sys.executable, "-m", "http.server",
                 "--bind", "::", "--directory", str(tmp / "www"), "80"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
        procs.append(spawn(NS["lan"], PRINTER, str(tmp / "lanwww"), "Printer"))
        procs.append(
            spawn(NS["app"], RELAY, LINK["lp"], LINK["tp"], str(WAN_PPS), str(WAN_BURST),
                  str(tmp / "relay.json"))
        )  # fmt: skip
        RELAY_PROC.append(procs[3])
        procs.append(spawn(NS["gw"], TRANSLATOR, LINK["hl"], LINK["hs"]))
        procs.append(spawn(NS["lan2"], PRINTER, str(tmp / "lan2www"), "Printer Two"))
        for p in (procs[0], procs[2], procs[3], procs[4], procs[5]):
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line.strip() == "ready", p.stderr.read() if p.stderr else ""
        time.sleep(2)  # zeroconf probing and announcing (RFC 6762 §8: ~1.75 s)
        yield tmp
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                out, err = p.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
            (tmp / f"proc{p.pid}.log").write_text(f"{out}\n----\n{err}")
        left = teardown()
        assert not left, f"namespaces left behind: {left}"


BROWSE_SERVICE = """
    import json, sys
    from cjb.service.discovery import browse
    found = browse(sys.argv[1], ["_ipp._tcp", "_http._tcp"], timeout=float(sys.argv[2]))
    print(json.dumps([{"name": s.name, "addresses": s.addresses, "port": s.port,
                       "v4": [str(a) for a in s.lan_ipv4], "txt": s.txt} for s in found]))
"""


def test_lan_printer_is_found_from_the_service_host_with_fe80_and_scope(topo: Path) -> None:
    found = json.loads(py(NS["svc"], BROWSE_SERVICE, LINK["s0"], "6"))
    printers = [s for s in found if s["name"] == "Printer._ipp._tcp.local."]
    assert printers, found
    (printer,) = printers
    assert printer["addresses"] == [f"fe80::c0a8:14%{LINK['s0']}"]
    assert printer["port"] == 631 and printer["v4"] == ["192.168.0.20"]
    assert printer["txt"] == {"rp": "ipp/print"}
    # Loop prevention: the relay's cloud service never comes back to the cloud as a LAN one.
    assert not [s for s in found if s["name"].startswith("Cloud Web")], found
    # Tenant isolation: the other tenant's printer (same IPv4!) is only on its own link.
    assert [s["name"] for s in found] == ["Printer._ipp._tcp.local."]
    other = json.loads(py(NS["svc"], BROWSE_SERVICE, LINK["s2"], "4"))
    assert [(s["name"], s["addresses"]) for s in other] == [
        ("Printer Two._ipp._tcp.local.", [f"fe80::c0a8:14%{LINK['s2']}"])
    ]


MSEARCH_V6 = msearch_v6_script("fe80::c0a8:64")


def test_service_host_msearch_gets_the_printer_and_fetches_its_description(topo: Path) -> None:
    out = py(NS["svc"], MSEARCH_V6, LINK["s0"])
    assert out.startswith("fe80::c0a8:14"), out
    assert "LOCATION: http://[fe80::c0a8:14]:8080/desc.xml" in out
    url = f"http://[fe80::c0a8:14%25{LINK['s0']}]:8080/desc.xml"
    got = sh("curl", "-sS", "-g", "--max-time", "10", url, ns=NS["svc"])
    assert got.stdout == "<root>lan printer</root>\n"


BROWSE_LAN = """
    import json, socket, time
    from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, Zeroconf
    zc = Zeroconf(interfaces=["192.168.0.20"], ip_version=IPVersion.V4Only)
    names = set()
    class H:
        def add_service(self, zc, t, n): names.add(n)
        def update_service(self, zc, t, n): names.add(n)
        def remove_service(self, zc, t, n): pass
    ServiceBrowser(zc, "_http._tcp.local.", H())
    time.sleep(3)
    out = []
    for n in sorted(names):
        info = ServiceInfo("_http._tcp.local.", n)
        if info.request(zc, 3000):
            out.append({"name": n, "addresses": info.parsed_addresses(), "port": info.port})
    zc.close()
    print(json.dumps(out))
"""


def test_cloud_service_is_found_on_the_lan_and_its_page_loads(topo: Path) -> None:
    found = json.loads(py(NS["lan"], BROWSE_LAN))
    assert {
        "name": "Cloud Web._http._tcp.local.",
        "addresses": ["192.168.0.100"],
        "port": 80,
    } in found
    page = sh("curl", "-sS", "--max-time", "10", "http://192.168.0.100/", ns=NS["lan"])
    assert page.stdout == "cloud page for t1\n"


MSEARCH_V4 = """
    import socket, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("192.168.0.20", 0))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("192.168.0.20"))
    msg = (b"M-SEARCH * HTTP/1.1\\r\\nHOST: 239.255.255.250:1900\\r\\n"
           b"MAN: \\"ssdp:discover\\"\\r\\nMX: 1\\r\\n"
           b"ST: urn:schemas-upnp-org:device:MediaServer:1\\r\\n\\r\\n")
    s.settimeout(0.5)
    end = time.monotonic() + 8
    while time.monotonic() < end:
        s.sendto(msg, ("239.255.255.250", 1900))
        try:
            data, addr = s.recvfrom(4096)
        except TimeoutError:
            continue
        if b"MediaServer" in data:
            print(data.decode()); break
"""


def test_lan_msearch_gets_the_cloud_device_and_its_location_works(topo: Path) -> None:
    out = py(NS["lan"], MSEARCH_V4)
    assert "LOCATION: http://192.168.0.100:80/upnp/description.xml" in out, out
    got = sh(
        "curl", "-sS", "--max-time", "10", "http://192.168.0.100:80/upnp/description.xml",
        ns=NS["lan"],
    )  # fmt: skip
    assert got.stdout == "<root>cloud media server</root>\n"


def test_storm_of_10000_mdns_packets_puts_at_most_the_configured_rate_on_the_wan(
    topo: Path,
) -> None:
    counter = spawn(NS["gw"], COUNT_WAN, LINK["gl"], "4")
    assert counter.stdout is not None and counter.stdout.readline().strip() == "ready"
    elapsed = float(py(NS["lan"], storm_script("192.168.0.20")))
    out, _ = counter.communicate(timeout=20)
    crossed = int(out.strip())
    bound = WAN_BURST + WAN_PPS * (elapsed + 0.5)
    time.sleep(1.5)  # the relay rewrites its status file every 0.5 s
    gate = json.loads((topo / "relay.json").read_text())["gate"]
    limited = gate.get("lan-to-wan-drop-rate-limit", 0)
    print(
        f"storm: 10000 in {elapsed:.2f} s; {crossed} crossed (bound {bound:.0f}); "
        f"{limited} rate-limited"
    )
    assert 0 < crossed <= bound
    assert limited >= 5000  # the rest never reached the gate (kernel queue) or crossed
    if shutil.which("tcpdump"):  # the kernel filter keeps data frames away from Python
        assert not [k for k in gate if k.startswith("no-capture-filter")], gate


WATCH_LAN = """
    import json, sys, time
    from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf
    zc = Zeroconf(interfaces=["192.168.0.20"], ip_version=IPVersion.V4Only)
    start = time.monotonic()
    def on_change(zeroconf, service_type, name, state_change):
        print(json.dumps([round(time.monotonic() - start, 2), state_change.name, name]),
              flush=True)
    ServiceBrowser(zc, "_http._tcp.local.", handlers=[on_change])
    print("ready", flush=True)
    time.sleep(float(sys.argv[1]))
    zc.close()
"""


def relay_command(word: str) -> None:
    relay = RELAY_PROC[0]
    assert relay.stdin is not None and relay.stdout is not None
    relay.stdin.write(word + "\n")
    relay.stdin.flush()
    assert relay.stdout.readline().strip() == "ok"


def test_goodbye_when_the_tunnel_goes_down_or_the_service_leaves_the_catalog(
    topo: Path,
) -> None:
    watcher = spawn(NS["lan"], WATCH_LAN, "14")
    assert watcher.stdout is not None and watcher.stdout.readline().strip() == "ready"
    time.sleep(2)
    for word in ("down", "up", "empty", "full"):
        relay_command(word)
        time.sleep(2.5)  # registering probes for ~1.75 s (RFC 6762 §8.1)
    out, _ = watcher.communicate(timeout=30)
    events = [json.loads(line) for line in out.splitlines()]
    cloud = [e[1] for e in events if e[2] == "Cloud Web._http._tcp.local."]
    # Seen at start, removed by goodbye (TTL 0) on tunnel down, back on up, removed when the
    # catalog drops it, back when it returns.
    assert cloud == ["Added", "Removed", "Added", "Removed", "Added"], events


def test_gate_keeps_working_after_its_ports_are_reopened(topo: Path) -> None:
    relay_command("refresh")
    found = json.loads(py(NS["svc"], BROWSE_SERVICE, LINK["s0"], "4"))
    assert [s["name"] for s in found] == ["Printer._ipp._tcp.local."]
