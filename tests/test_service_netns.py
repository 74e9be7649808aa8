"""Real kernel: one server process tells apart two tenants whose clients have the SAME address.

    ns cjbt<id>-a                 ns cjbt<id>-s                     ns cjbt<id>-b
  ┌──────────────────┐      ┌───────────────────────────┐      ┌──────────────────┐
  │ eth0             │ veth │ ta  fe80::c0a8:64         │ veth │ eth0             │
  │ fe80::c0a8:a ────┼──────┼─► tenant "acme"           │◄─────┼─ fe80::c0a8:a    │
  │                  │      │ tb  fe80::c0a8:64         │      │                  │
  │                  │      │   tenant "globex"         │      │                  │
  └──────────────────┘      │ cjb service serve  [::]:80│      └──────────────────┘
                            │ cjb service front  [::]:81 → serve --proxy-protocol [::1]:8080
                            └───────────────────────────┘

Links use `addrgenmode none` and `nodad` so the only addresses are the ones above.
Everything carries the run's id and is removed on every exit path; the test checks that.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow]

SERVER_ADDR = "fe80::c0a8:64"
CLIENT_ADDR = "fe80::c0a8:a"


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces and veth links")
    for tool in ("ip", "curl"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs `{tool}` on PATH (apt-get install iproute2 curl)")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def run_netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, text=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


@dataclass
class Lab:
    run_id: str
    workdir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def server(self) -> str:
        return f"{self.run_id}-s"

    def client(self, side: str) -> str:
        return f"{self.run_id}-{side}"

    @property
    def namespaces(self) -> list[str]:
        return [self.server, self.client("a"), self.client("b")]

    def start(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.stderr", "wb")  # noqa: SIM115 - closed with the process
        cmd = [
            "ip",
            "netns",
            "exec",
            self.server,
            sys.executable,
            "-m",
            "cjb.cli",
            "service",
            *argv,
        ]
        proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        log.close()
        self.procs.append(proc)
        return proc

    def curl(self, side: str, port: int) -> subprocess.CompletedProcess[str]:
        url = f"http://[{SERVER_ADDR}%eth0]:{port}/"
        return subprocess.run(
            ["ip", "netns", "exec", self.client(side), "curl", "-sS", "-g", "--max-time", "5", url],
            capture_output=True,
            text=True,
            timeout=15,
        )

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    _need_root()
    lab = Lab(f"cjbt{secrets.token_hex(3)}", tmp_path)
    try:
        for ns in lab.namespaces:
            ip("netns", "add", ns)
        ip("-n", lab.server, "link", "set", "lo", "up")
        for side, link in (("a", "ta"), ("b", "tb")):
            client = lab.client(side)
            ip(
                "-n",
                lab.server,
                "link",
                "add",
                link,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                client,
            )
            for ns, dev, addr in ((lab.server, link, SERVER_ADDR), (client, "eth0", CLIENT_ADDR)):
                ip("-n", ns, "link", "set", dev, "addrgenmode", "none")
                ip("-n", ns, "addr", "add", f"{addr}/64", "dev", dev, "nodad")
                ip("-n", ns, "link", "set", dev, "up")
        yield lab
    finally:
        lab.cleanup()
        leftover = {ns for ns in run_netns() if ns.startswith(lab.run_id)}
        assert not leftover, f"namespaces of run {lab.run_id} remain: {leftover}"


def _write_site(workdir: Path) -> tuple[Path, Path]:
    directory = workdir / "tenants.json"
    directory.write_text(
        json.dumps(
            {
                "version": 1,
                "tenants": {
                    "ta": {
                        "tenant": "acme",
                        "service_ipv4": "192.168.0.100",
                        "native_ifname": None,
                    },
                    "tb": {
                        "tenant": "globex",
                        "service_ipv4": "192.168.0.100",
                        "native_ifname": None,
                    },
                },
            }
        )
    )
    docroot = workdir / "www"
    (docroot / "acme").mkdir(parents=True)
    (docroot / "acme" / "index.html").write_text("ACME OWN PAGE\n")
    return directory, docroot  # globex has no docroot: it gets the generated page


def _wait_for(lab: Lab, side: str, port: int, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 10
    while True:
        result = lab.curl(side, port)
        if result.returncode == 0:
            return result.stdout
        if proc.poll() is not None or time.monotonic() > deadline:
            logs = "\n".join(p.read_text() for p in lab.workdir.glob("*.stderr"))
            raise AssertionError(f"server not reachable: {result.stderr}\n{logs}")
        time.sleep(0.2)


def _access(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_same_client_address_two_tenants_by_scope_id(lab: Lab) -> None:
    directory, docroot = _write_site(lab.workdir)
    access = lab.workdir / "access.log"
    proc = lab.start(
        "serve",
        "serve",
        "--directory",
        str(directory),
        "--port",
        "80",
        "--docroot",
        str(docroot),
        "--access-log",
        str(access),
    )
    page_a = _wait_for(lab, "a", 80, proc)
    page_b = lab.curl("b", 80).stdout
    assert page_a == "ACME OWN PAGE\n"
    assert "Hello, tenant globex" in page_b and "<b>tb</b>" in page_b
    assert f"{CLIENT_ADDR}%tb" in page_b
    lines = _access(access)
    assert {(x["tenant"], x["ifname"], x["status"]) for x in lines} == {
        ("acme", "ta", 200),
        ("globex", "tb", 200),
    }
    assert {x["peer"] for x in lines} == {f"{CLIENT_ADDR}%ta", f"{CLIENT_ADDR}%tb"}
    assert {x["path"] for x in lines} == {"translated"}  # ta, tb are service links

    # The gateway drops tenant globex (atomic rename): the running server notices by itself.
    doc = json.loads(directory.read_text())
    del doc["tenants"]["tb"]
    (lab.workdir / "tenants.json.new").write_text(json.dumps(doc))
    (lab.workdir / "tenants.json.new").replace(directory)
    deadline = time.monotonic() + 10
    while "unknown tenant" not in (refused := lab.curl("b", 80).stdout):
        assert time.monotonic() < deadline, f"directory change not picked up: {refused!r}"
        time.sleep(0.2)
    assert refused.startswith("unknown tenant on interface tb:")
    assert lab.curl("a", 80).stdout == "ACME OWN PAGE\n"


def test_same_through_the_proxy_v2_front(lab: Lab) -> None:
    directory, docroot = _write_site(lab.workdir)
    access = lab.workdir / "access.log"
    lab.start(
        "upstream",
        "serve",
        "--directory",
        str(directory),
        "--port",
        "8080",
        "--bind",
        "::1",
        "--docroot",
        str(docroot),
        "--proxy-protocol",
        "--access-log",
        str(access),
    )
    front = lab.start(
        "front",
        "front",
        "--directory",
        str(directory),
        "--listen-port",
        "81",
        "--upstream",
        "[::1]:8080",
    )
    page_a = _wait_for(lab, "a", 81, front)
    page_b = lab.curl("b", 81).stdout
    assert page_a == "ACME OWN PAGE\n"
    assert "Hello, tenant globex" in page_b and f"{CLIENT_ADDR}%tb" in page_b
    lines = [x for x in _access(access) if x["status"] == 200]
    assert {(x["tenant"], x["ifname"], x["via"]) for x in lines} == {
        ("acme", "ta", "proxy"),
        ("globex", "tb", "proxy"),
    }
