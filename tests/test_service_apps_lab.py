"""Applications across the junction, in the lab: three tenants whose clients all have
192.168.0.10 and the same MAC (`--same-mac`), plain-VXLAN transport (the junction behaves the
same as with WireGuard; this lab comes up faster).

- Debian's stock nginx, Apache and HAProxy, configured only by `cjb service config …`, behind
  `cjb service front`: each tenant gets its own page, and the servers log each tenant's
  client under its own tenant-unique address.
- `cjb service dns`: one UDP socket on port 53, each tenant gets its own answer (real `dig`),
  and no reply leaks onto another tenant's LAN.
- docs/applications.md: its example programs run as written (TCP and UDP, asyncio and
  blocking), reached with real `nc` from the sites.

One lab for the module; every server runs inside the lab's service namespace with its own
config, pid and log files under a temporary folder (never the system-wide instance).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from labkit import Capture, fresh_status, lab, python_in, require, run_in, send_frames, wait_port

from cjb.common.netlink import netns
from cjb.common.netlink.real import RealKernel
from cjb.common.packet.ethernet import BROADCAST_MAC, ETHERTYPE_IPV4, build_ethernet
from cjb.common.packet.ipv4 import build_ipv4
from cjb.common.packet.transport import build_udp
from cjb.lab.state import LabState
from cjb.service.tenant_address import client_address

pytestmark = [pytest.mark.root, pytest.mark.slow]

SERVICE_IPV4 = "192.168.0.100"
CLIENT_IPV4 = "192.168.0.10"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "applications.md"
APACHE_MODULES = Path("/usr/lib/apache2/modules")


@dataclass
class Apps:
    state: LabState
    workdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def directory(self) -> str:
        return str(self.state.run_dir / "tenants.json")

    @property
    def service(self) -> str:
        return self.state.namespaces["service"]

    def tenants(self) -> list[int]:
        return list(range(1, self.state.tenants + 1))

    def site(self, k: int) -> str:
        return self.state.namespaces[f"site{k}"]

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        with netns(self.service):
            proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def cjb(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "cjb.cli", *args]

    def config(self, server: str, *args: str) -> str:
        out = subprocess.run(
            self.cjb("service", "config", server, "--directory", self.directory, *args),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text()[-2000:]}" for p in self.workdir.glob("*.log")
        )

    def wait_tcp(self, port: int, name: str) -> None:
        proc = self.procs[name]
        try:
            wait_port(self.service, port, timeout=15)
        except AssertionError:
            raise AssertionError(
                f"{name} (exit {proc.poll()}) not listening:\n{self.logs()}"
            ) from None

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


@pytest.fixture(scope="module")
def apps() -> Iterator[Apps]:
    require("nginx", "apache2", "haproxy", "dig", "nc", "curl")
    with lab(3, same_mac=True) as state:
        # Not pytest's tmp_path: nginx's and Apache's workers (nobody, www-data) must read it.
        workdir = Path(tempfile.mkdtemp(prefix="cjb-apps-"))
        workdir.chmod(0o755)
        apps = Apps(state, workdir)
        try:
            for k in apps.tenants():
                page = workdir / "www" / f"tenant{k}" / "index.html"
                page.parent.mkdir(parents=True)
                page.write_text(f"the own page of tenant{k}\n")
            for path in (workdir / "www").rglob("*"):
                path.chmod(0o755 if path.is_dir() else 0o644)
            (workdir / "www").chmod(0o755)
            yield apps
        finally:
            apps.stop()
            shutil.rmtree(workdir, ignore_errors=True)


def _curl(apps: Apps, k: int, port: int) -> tuple[int, dict[str, str], str]:
    out = run_in(
        apps.site(k), ["curl", "-sS", "-i", "--max-time", "5", f"http://{SERVICE_IPV4}:{port}/"]
    )
    assert out.returncode == 0, f"site{k} :{port}: {out.stderr}\n{apps.logs()}"
    head, _, body = out.stdout.replace("\r\n", "\n").partition("\n\n")
    lines = head.splitlines()
    status = int(lines[0].split()[1])
    headers = {n.strip().lower(): v.strip() for n, _, v in (x.partition(":") for x in lines[1:])}
    return status, headers, body


def _own_pages(apps: Apps, port: int, server_header: str) -> None:
    for k in apps.tenants():
        status, headers, body = _curl(apps, k, port)
        assert (status, body) == (200, f"the own page of tenant{k}\n"), (k, status, body)
        assert headers.get("server", "").lower().startswith(server_header), headers


def _unique(k: int) -> str:
    return str(client_address(f"tenant{k}", CLIENT_IPV4))


def _logged_addresses(log: Path, apps: Apps) -> dict[int, set[str]]:
    """Per tenant, the client addresses the server logged for requests of its page."""
    text = log.read_text()
    return {
        k: {line.split()[0] for line in text.splitlines() if line.split()[0] == _unique(k)}
        for k in apps.tenants()
    }


def _direct_link_local_request(apps: Apps, port: int) -> str:
    """A PROXY header with the bare fe80:: client (what a front in link-local mode sends),
    straight to the server: it is in no tenant's prefix, so the server must refuse."""
    code = r"""
import socket, sys
from cjb.service import proxy_v2
h = proxy_v2.encode(proxy_v2.stream6("fe80::c0a8:a", 5000, "fe80::c0a8:64", 80))
s = socket.create_connection(("::1", int(sys.argv[1])), timeout=5)
s.sendall(h + b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
data = b""
while chunk := s.recv(4096):
    data += chunk
print(data.decode(errors="replace").splitlines()[0])
"""
    out = python_in(apps.service, code, str(port))
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_stock_nginx_serves_each_tenant_its_page(apps: Apps) -> None:
    www = apps.workdir / "www"
    snippet = apps.config("nginx", "--docroot", str(www), "--listen", "[::1]:8080")
    (apps.workdir / "cjb-tenants.conf").write_text(snippet)
    access = apps.workdir / "nginx-access.log"
    # Debian's nginx.conf minus sites-enabled (its port-80 default site): the snippet is the
    # whole configuration of the server.
    (apps.workdir / "nginx.conf").write_text(
        f"daemon off;\npid {apps.workdir}/nginx.pid;\nerror_log {apps.workdir}/nginx-error.log;\n"
        "events {}\nhttp {\n    include /etc/nginx/mime.types;\n"
        f"    access_log {access};\n"
        f"    include {apps.workdir}/cjb-tenants.conf;\n}}\n"
    )
    apps.start("nginx", ["nginx", "-c", f"{apps.workdir}/nginx.conf", "-p", str(apps.workdir)])
    apps.wait_tcp(8080, "nginx")
    apps.start(
        "front-nginx",
        apps.cjb("service", "front", "--directory", apps.directory, "--listen-port", "8081",
                 "--upstream", "[::1]:8080"),
    )  # fmt: skip
    apps.wait_tcp(8081, "front-nginx")

    _own_pages(apps, 8081, "nginx")
    # nginx saw each tenant's 192.168.0.10 as a different client: its tenant-unique address.
    logged = _logged_addresses(access, apps)
    assert all(logged[k] == {_unique(k)} for k in apps.tenants()), (logged, access.read_text())
    assert len({_unique(k) for k in apps.tenants()}) == apps.state.tenants
    assert " 403 " in _direct_link_local_request(apps, 8080)


def test_stock_apache_serves_each_tenant_its_page(apps: Apps) -> None:
    www = apps.workdir / "www"
    snippet = apps.config("apache", "--docroot", str(www), "--listen", "[::1]:8090")
    (apps.workdir / "cjb-tenants-apache.conf").write_text(snippet)
    run = apps.workdir / "apache-run"
    run.mkdir()
    access = apps.workdir / "apache-access.log"
    modules = ("mpm_event", "authz_core", "dir", "mime", "remoteip", "rewrite")
    (apps.workdir / "apache2.conf").write_text(
        "\n".join(
            [
                f"ServerRoot {apps.workdir}",
                f"DefaultRuntimeDir {run}",
                f"PidFile {run}/apache2.pid",
                f"ErrorLog {apps.workdir}/apache-error.log",
                "ServerName cjb-apps-test",
                "User www-data",
                "Group www-data",
                *(f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so" for m in modules),
                "TypesConfig /etc/mime.types",
                "DirectoryIndex index.html",
                f'CustomLog {access} "%a %r %>s"',
                f"Include {apps.workdir}/cjb-tenants-apache.conf",
                "",
            ]
        )
    )
    apps.start("apache", ["apache2", "-f", f"{apps.workdir}/apache2.conf", "-DFOREGROUND"])
    apps.wait_tcp(8090, "apache")
    apps.start(
        "front-apache",
        apps.cjb("service", "front", "--directory", apps.directory, "--listen-port", "8091",
                 "--upstream", "[::1]:8090"),
    )  # fmt: skip
    apps.wait_tcp(8091, "front-apache")

    _own_pages(apps, 8091, "apache")
    logged = _logged_addresses(access, apps)
    assert all(logged[k] == {_unique(k)} for k in apps.tenants()), (logged, access.read_text())
    assert " 403 " in _direct_link_local_request(apps, 8090)


def test_stock_haproxy_routes_each_tenant_to_its_backend(apps: Apps) -> None:
    upstreams = []
    for k in apps.tenants():
        port = 9100 + k
        apps.start(
            f"backend{k}",
            [sys.executable, "-m", "http.server", "-b", "::1", "-d",
             str(apps.workdir / "www" / f"tenant{k}"), str(port)],
        )  # fmt: skip
        upstreams += ["--upstream", f"tenant{k}=[::1]:{port}"]
    snippet = apps.config("haproxy", "--listen", "[::1]:8070", *upstreams)
    (apps.workdir / "haproxy.cfg").write_text(
        "global\n    log stderr format raw local0\ndefaults\n    mode http\n    log global\n"
        "    option httplog\n    timeout connect 5s\n    timeout client 10s\n"
        "    timeout server 10s\n\n" + snippet
    )
    apps.start("haproxy", ["haproxy", "-f", f"{apps.workdir}/haproxy.cfg", "-db"])
    for k in apps.tenants():
        apps.wait_tcp(9100 + k, f"backend{k}")
    apps.wait_tcp(8070, "haproxy")
    apps.start(
        "front-haproxy",
        apps.cjb("service", "front", "--directory", apps.directory, "--listen-port", "8071",
                 "--upstream", "[::1]:8070"),
    )  # fmt: skip
    apps.wait_tcp(8071, "front-haproxy")
    for k in apps.tenants():
        status, _, body = _curl(apps, k, 8071)
        assert (status, body) == (200, f"the own page of tenant{k}\n"), (k, status, body)
    assert " 403 " in _direct_link_local_request(apps, 8070)


def _dig(apps: Apps, k: int, name: str, rtype: str) -> subprocess.CompletedProcess[str]:
    return run_in(
        apps.site(k),
        ["dig", "+tries=2", "+time=2", "+noall", "+answer", "+comments",
         f"@{SERVICE_IPV4}", name, rtype],
        timeout=20,
    )  # fmt: skip


def _dns_replies_to(frames: list[bytes]) -> int:
    """IPv4/UDP frames from source port 53 (DNS replies) among captured Ethernet frames."""
    count = 0
    for f in frames:
        if len(f) >= 38 and f[12:14] == b"\x08\x00" and f[23] == 17:
            ihl = (f[14] & 0x0F) * 4
            if int.from_bytes(f[14 + ihl : 16 + ihl], "big") == 53:
                count += 1
    return count


def test_udp_dns_answers_each_tenant_on_one_socket(apps: Apps) -> None:
    apps.start("dns", apps.cjb("service", "dns", "--directory", apps.directory, "--port", "53"))
    wait_port(apps.service, 53, socket.SOCK_DGRAM, timeout=15)
    others = [apps.site(k) for k in apps.tenants() if k != 1]
    captures = [Capture(ns, ["eth0"]) for ns in others]
    # A second address on tenant 1's service link (a second service IPv4, 192.168.0.11), which
    # shares a longer prefix with the client than the service address does: for a reply from
    # a wildcard socket the kernel would pick it (RFC 6724 rule 8) and dig would reject the
    # answer as coming from the wrong server. The framework answers from the address asked.
    second = ["fe80::c0a8:b/64", "dev", _service_ifname(apps, 1)]
    subprocess.run(["ip", "-n", apps.service, "addr", "add", *second, "nodad"], check=True)
    try:
        for k in apps.tenants():
            whoami = _dig(apps, k, "whoami.cjb", "TXT")
            assert "status: NOERROR" in whoami.stdout, whoami.stdout + whoami.stderr
            txt = re.findall(r"\bTXT\s+(.*)$", whoami.stdout, re.MULTILINE)
            assert txt == [f'"tenant=tenant{k}" "client={CLIENT_IPV4}"'], whoami.stdout
            a = _dig(apps, k, "service.cjb", "A")
            assert re.findall(r"\bA\s+(\S+)$", a.stdout, re.MULTILINE) == [SERVICE_IPV4], a.stdout
            refused = _dig(apps, k, "example.com", "A")
            assert "status: REFUSED" in refused.stdout, refused.stdout
            if k == 1:
                # Site 1's three answers went to site 1 only: none reached the other LANs.
                leaked = [_dns_replies_to(c.drain()["eth0"]) for c in captures]
                assert leaked == [0] * len(others), leaked
    finally:
        for c in captures:
            c.close()
        subprocess.run(["ip", "-n", apps.service, "addr", "del", *second], check=True)


def _service_ifname(apps: Apps, k: int) -> str:
    doc = json.loads(Path(apps.directory).read_text())
    return next(name for name, e in doc["tenants"].items() if e["tenant"] == f"tenant{k}")


def _docs_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.DOTALL)


def test_docs_example_runs_as_written(apps: Apps) -> None:
    blocks = _docs_python_blocks()
    assert len(blocks) == 2, "docs/applications.md: expected the example and the blocking one"
    greet, blocking = blocks
    (apps.workdir / "greet.py").write_text(greet)
    # The blocking snippet names the default directory path: point it at the lab's.
    assert '"/run/cjb/tenants.json"' in blocking
    (apps.workdir / "blocking.py").write_text(
        blocking.replace('"/run/cjb/tenants.json"', repr(apps.directory))
    )
    apps.start("greet", [sys.executable, str(apps.workdir / "greet.py"), apps.directory, "7000"])
    apps.start("blocking", [sys.executable, str(apps.workdir / "blocking.py")])
    apps.wait_tcp(7000, "greet")
    wait_port(apps.service, 7000, socket.SOCK_DGRAM)
    wait_port(apps.service, 7001, socket.SOCK_DGRAM)
    for k in apps.tenants():
        site = apps.site(k)
        with netns(site):
            tcp = subprocess.run(
                ["nc", "-N", "-w", "5", SERVICE_IPV4, "7000"],
                input=f"alice{k}\n", capture_output=True, text=True, timeout=15, check=False,
            )  # fmt: skip
        assert tcp.stdout == f"hello alice{k} at {CLIENT_IPV4}, tenant tenant{k}\n", (
            tcp.stdout + tcp.stderr + apps.logs()
        )
        for port, expected in (
            (7000, f"tenant tenant{k} got 5 bytes from {CLIENT_IPV4}\n"),
            (7001, f"tenant{k}"),
        ):
            with netns(site):
                udp = subprocess.run(
                    ["nc", "-u", "-w", "1", SERVICE_IPV4, str(port)],
                    input="ping\n", capture_output=True, text=True, timeout=15, check=False,
                )  # fmt: skip
            assert udp.stdout == expected, (port, udp.stdout + udp.stderr + apps.logs())


BLOCKING_TCP = r"""
import logging, sys
from cjb.service.framework import run_tcp
logging.basicConfig(level=logging.INFO, format="%(message)s")

def hello(client, sock):
    sock.recv(100)
    sock.sendall(f"{client.tenant} {client.ipv4} {client.unique_address}\n".encode())

run_tcp(hello, 7002, directory=sys.argv[1])
"""


def test_blocking_tcp_api(apps: Apps) -> None:
    apps.start("blocking-tcp", [sys.executable, "-c", BLOCKING_TCP, apps.directory])
    apps.wait_tcp(7002, "blocking-tcp")
    for k in apps.tenants():
        with netns(apps.site(k)):
            out = subprocess.run(
                ["nc", "-N", "-w", "5", SERVICE_IPV4, "7002"],
                input="hi\n", capture_output=True, text=True, timeout=15, check=False,
            )  # fmt: skip
        assert out.stdout == f"tenant{k} {CLIENT_IPV4} {_unique(k)}\n", out.stdout + apps.logs()
    # A peer on no tenant link (loopback, scope id 0) is refused: closed without a word.
    refused = python_in(
        apps.service,
        "import socket; s = socket.create_connection(('::1', 7002), timeout=5); "
        "print(repr(s.recv(100)))",
    )
    assert refused.stdout.strip() == "b''", refused.stdout + refused.stderr
    assert '"event":"refused"' in (apps.workdir / "blocking-tcp.log").read_text()


def _dhcp_discover(mac: bytes) -> bytes:
    """A DHCPDISCOVER as a client without an address sends it (RFC 2131 §4.4.1)."""
    bootp = struct.pack("!BBBBIHH", 1, 1, 6, 0, 0x5EED, 0, 0x8000) + bytes(16) + mac + bytes(202)
    options = b"\x63\x82\x53\x63" + b"\x35\x01\x01" + b"\xff"  # cookie, DHCPDISCOVER, end
    payload = bootp + options
    udp = build_udp(68, 67, 8 + len(payload)) + payload
    ip = build_ipv4(
        tos=0, total_length=20 + len(udp), identification=1, flags_offset=0, ttl=64,
        protocol=17, src=bytes(4), dst=b"\xff" * 4,
    )  # fmt: skip
    return build_ethernet(BROADCAST_MAC, mac, ETHERTYPE_IPV4) + ip + udp


def _drops(state: LabState) -> dict[str, int]:
    drops: dict[str, int] = fresh_status(state)["tenants"]["tenant1"]["router"]["drops"]
    return drops


NETBIOS_BROADCAST = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
for _ in range(5):
    s.sendto(b"\x12\x34" + bytes(48), ("192.168.0.255", 137))  # the subnet broadcast
"""


def test_broadcast_services_stop_at_the_translator_and_are_counted(apps: Apps) -> None:
    """What docs/applications.md says cannot cross: DHCP (from 0.0.0.0, to broadcast) and
    IPv4 broadcast from an addressed host (NetBIOS name service), dropped and counted."""
    with RealKernel() as kernel:
        mac = kernel.links(apps.site(1))["eth0"].mac
    service_link = _service_ifname(apps, 1)
    before = _drops(apps.state)
    capture = Capture(apps.service, [service_link])
    try:
        send_frames(apps.site(1), "eth0", [_dhcp_discover(bytes.fromhex(mac.replace(":", "")))] * 5)
        sent = python_in(apps.site(1), NETBIOS_BROADCAST)
        assert sent.returncode == 0, sent.stderr
        reasons = ("address-not-translatable", "broadcast")
        deadline = time.monotonic() + 10
        while True:  # the status file is rewritten once a second
            after = _drops(apps.state)
            grew = {k: after.get(k, 0) - before.get(k, 0) for k in reasons}
            if min(grew.values()) >= 5 or time.monotonic() > deadline:
                break
        frames = capture.drain()[service_link]
    finally:
        capture.close()
    assert grew == {"address-not-translatable": 5, "broadcast": 5}, (before, after)
    udp_ports = {
        int.from_bytes(f[56:58], "big") for f in frames if f[12:14] == b"\x86\xdd" and f[20] == 17
    }
    assert not udp_ports & {67, 137}, udp_ports
