"""Hardening: the systemd units sandbox the services (checked statically
for every unit, and the gateway's two booted under systemd-nspawn), and the HTTPS API
refuses oversized and malformed requests, over aiohttp and over raw TLS, without ever
answering 5xx and while staying up for the next client. (Key files 0600 and key material
absent from logs: tests/resilience/test_lab_faults.py scans a whole enrolled lab run.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import labkit
import pytest
from controlkit import Device, Gateway, gateway, snapshot
from reskit import Report, Tally

from cjb.common.control.protocol import MAX_REQUEST_BODY, SIGNATURE_HEADER
from cjb.common.netlink import netns
from cjb.common.wireguard import generate_private_key, public_key
from cjb.gateway.dataplane.config import read_model

ROOT = Path(__file__).resolve().parents[2]
# Where the product's systemd units live: the appliance image's overlay and the gateway's own
# folder. One discovery for both, so a unit added in either place is checked.
UNIT_DIRS = (ROOT / "image-build", ROOT / "gateway" / "systemd")
UNIT_SUFFIXES = (".service", ".socket", ".timer", ".path")
# Each: option -> values that count as sandboxed (None: any non-empty value).
REQUIRED: dict[str, tuple[str, ...] | None] = {
    "NoNewPrivileges": ("yes", "true"),
    "ProtectSystem": ("strict", "full"),
    "ProtectHome": ("yes", "true", "read-only", "tmpfs"),
    "PrivateTmp": ("yes", "true"),
    "ProtectKernelModules": ("yes", "true"),
    "ProtectControlGroups": ("yes", "true"),
    "RestrictSUIDSGID": ("yes", "true"),
    "CapabilityBoundingSet": None,
    "RestrictAddressFamilies": None,
    "UMask": ("0077", "0027", "077", "027"),
    "SystemCallFilter": None,
    "SystemCallArchitectures": ("native",),
    "MemoryDenyWriteExecute": ("yes", "true"),
    "LockPersonality": ("yes", "true"),
    "RestrictNamespaces": ("yes", "true"),
}
EXPOSURE_LIMIT = 5.0  # systemd-analyze security: 0 = fully locked down, 10 = unprotected
DATAPLANE_CAPS = frozenset({"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_BPF", "CAP_PERFMON"})


@dataclass(frozen=True)
class Profile:
    """What one unit's job allows: its exact capabilities, and who it runs as."""

    caps: frozenset[str]
    user: str | None  # None: root (the appliance agent owns the board)
    exposure: float = EXPOSURE_LIMIT
    # Starts wireguard-go, which must outlive a daemon restart (common/wireguard/userspace.py).
    keeps_children: bool = False


PROFILES = {
    "cjb-appliance.service": Profile(
        frozenset({"CAP_NET_ADMIN", "CAP_NET_RAW"}), None, exposure=3.0, keeps_children=True
    ),
    "cjb-gateway-api.service": Profile(frozenset(), "cjb-gw-api", exposure=2.0),
    "cjb-gateway-dataplane.service": Profile(
        DATAPLANE_CAPS, "cjb-gw-data", exposure=3.0, keeps_children=True
    ),
}


def unit_files() -> list[Path]:
    return sorted(
        p for r in UNIT_DIRS if r.exists() for p in r.rglob("*") if p.suffix in UNIT_SUFFIXES
    )


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd.syntax(7): [Section] headers, Key=Value lines, # and ; comments, keys may
    repeat (so not configparser), backslash continues a line."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.replace("\\\n", " ").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"option outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not Key=Value: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _caps(values: list[str]) -> frozenset[str]:
    """The set a list of CapabilityBoundingSet=/AmbientCapabilities= lines leaves (an empty
    assignment resets it, systemd.exec(5)); `~` lists are not used by our units."""
    caps: set[str] = set()
    for v in values:
        assert not v.startswith("~"), f"name the capabilities kept, not dropped: {v}"
        caps = caps | set(v.split()) if v else set()
    return frozenset(caps)


def _security(unit: Path) -> float:
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True, text=True, timeout=60, check=False,
    ).stdout  # fmt: skip
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", out)
    assert m, out[-500:]
    return float(m.group(1))


def _verify(unit: Path) -> list[str]:
    """`systemd-analyze verify` findings, minus the ExecStart binary's absence: the units
    name the installed path (/opt/cjb/bin/cjb), which a development checkout lacks."""
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    lines = (done.stdout + done.stderr).splitlines()
    return [ln for ln in lines if ln.strip() and "/opt/cjb/bin/cjb is not executable" not in ln]


def test_systemd_units_are_sandboxed(report: Report) -> None:
    units = [u for u in unit_files() if u.suffix == ".service"]
    found = {u.name for u in units}
    assert found == set(PROFILES), (
        f"units {sorted(found)} vs profiles {sorted(PROFILES)}: give a new unit a Profile "
        "(its capabilities and user) here, or remove the stale one"
    )
    notes: list[str] = []
    problems = {unit.name: _sandbox_problems(unit, notes) for unit in units}
    sandboxed = Tally()
    for name, found_here in problems.items():
        sandboxed.add(not found_here, name)
    report(
        "systemd-sandboxing", *sandboxed.counts,
        ", ".join(notes) + (f"; failing: {sandboxed.lost_note()}" if sandboxed.lost else ""),
        means="unit files with every sandboxing option, exact capabilities and user, "
        "verify clean, exposure within its limit",
    )  # fmt: skip
    assert not any(problems.values()), problems


def _sandbox_problems(unit: Path, notes: list[str]) -> list[str]:
    """What one unit file lacks, as messages (empty: sandboxed as its profile says)."""
    problems: list[str] = []

    def check(ok: bool, message: str) -> None:
        if not ok:
            problems.append(f"{unit.name}: {message}")

    profile = PROFILES[unit.name]
    service = parse_unit(unit.read_text()).get("Service", {})
    for option, good in REQUIRED.items():
        values = service.get(option)
        if values is None:
            check(False, f"[Service] lacks {option}= (systemd.exec(5))")
        elif good is not None:
            check(values[-1].lower() in good, f"{option}={values[-1]}")
        elif option != "CapabilityBoundingSet":  # empty there means "no capabilities"
            check(bool(values[-1]), f"{option}= is empty")
    bounding = _caps(service.get("CapabilityBoundingSet", []))
    check(bounding == profile.caps, f"capabilities {sorted(bounding)}")
    check("CAP_SYS_ADMIN" not in bounding, "CAP_SYS_ADMIN in the bounding set")
    ambient = _caps(service.get("AmbientCapabilities", []))
    check(ambient <= bounding, f"ambient {sorted(ambient - bounding)} unbounded")
    user = (service.get("User") or [None])[-1]
    check(user == profile.user, f"User={user}, expected {profile.user}")
    if user is not None:
        check(ambient == bounding, "a non-root user gets its caps as ambient")
    if profile.keeps_children:
        # A restart must not take wireguard-go (and every tunnel) with it.
        check(service.get("KillMode") == ["process"], "KillMode=process")
        check(service.get("RuntimeDirectoryPreserve") == ["yes"], "RuntimeDirectoryPreserve=yes")
    check(service.get("Restart") == ["on-failure"], "Restart=on-failure")
    if shutil.which("systemd-analyze"):
        verify = _verify(unit)
        check(not verify, f"systemd-analyze verify: {verify}")
        exposure = _security(unit)
        check(exposure <= profile.exposure, f"exposure {exposure} > {profile.exposure}")
        notes.append(f"{unit.name} exposure {exposure}")
    return problems


def test_gateway_example_config_fits_the_units() -> None:
    """gateway/systemd/gateway.json is valid, and everything the data plane writes lies in
    the directories its unit makes writable (ProtectSystem=strict makes the rest read-only);
    what it reads of the state directory is its own dataplane/ and the API's export/ export,
    the directories cjb-gateway.tmpfiles.conf gives the right owners."""
    from cjb.gateway.control.statedir import StateDir

    model = read_model(ROOT / "gateway/systemd/gateway.json")
    service = parse_unit((ROOT / "gateway/systemd/cjb-gateway-dataplane.service").read_text())
    service_opts = service["Service"]
    assert "StateDirectory" not in service_opts  # it writes nothing there
    writable = [Path("/run", d) for d in service_opts["RuntimeDirectory"][-1].split()]
    writable += [Path("/var/log", d) for d in service_opts["LogsDirectory"][-1].split()]
    assert model.wireguard is not None and model.registry is not None
    written = [Path(model.state_dir)]
    written += [Path(p) for p in (model.directory_file, model.wireguard.log_file) if p]
    for path in written:
        assert any(path.is_relative_to(w) for w in writable), f"{path} is read-only for the unit"
    assert Path("/run/wireguard") in writable  # wireguard-go's UAPI socket (docs/platform.md)
    exec_start = service_opts["ExecStart"][-1]
    assert "--config /etc/cjb/gateway.json" in exec_start
    layout = StateDir(Path("/var/lib/cjb-gateway"))
    assert Path(model.registry.path) == layout.desired
    assert Path(model.wireguard.private_key_file) == layout.wg_private
    api = parse_unit((ROOT / "gateway/systemd/cjb-gateway-api.service").read_text())["Service"]
    assert f"--dataplane-status {model.state_dir}/status.json" in api["ExecStart"][-1]
    assert f"--state-dir {layout.root}" in api["ExecStart"][-1]
    assert api["ReadWritePaths"][-1].split() == [str(layout.api_dir), str(layout.export_dir)]
    tmpfiles = (ROOT / "gateway/systemd/cjb-gateway.tmpfiles.conf").read_text().splitlines()
    dirs = {f[1]: (f[2], f[3], f[4]) for f in (ln.split() for ln in tmpfiles) if f and f[0] == "d"}
    assert dirs[str(layout.api_dir)] == ("0700", "cjb-gw-api", "cjb-gw-api")
    assert dirs[str(layout.dataplane_dir)] == ("0700", "cjb-gw-data", "cjb-gw-data")
    assert dirs[str(layout.export_dir)] == ("2750", "cjb-gw-api", "cjb-gw-data")


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    with gateway(tmp_path) as g:
        yield g


def _hostile_bodies(dev: Device, nonce: str) -> list[tuple[str, bytes]]:
    good = dev.body(nonce)
    return [
        ("empty", b""),
        ("not json", b"{not json"),
        ("json array", b"[1, 2, 3]"),
        ("json null", b"null"),
        ("deep nesting", b"[" * 100_000 + b"]" * 100_000),
        ("deep object", b'{"a":' * 20_000 + b"1" + b"}" * 20_000),
        ("invalid utf-8", b'{"serial": "\xff\xfe"}'),
        ("nul bytes", good.replace(b'"version"', b'"ver\x00sion"')),
        ("huge number", good.replace(b'"version": 1', b'"version": ' + b"9" * 5000)),
        ("wrong types", good.replace(b'"version": 1', b'"version": "one"')),
        ("missing fields", b'{"serial": "x"}'),
        ("just under the limit", b" " * (MAX_REQUEST_BODY - 10) + b"{}"),
        ("over the limit", good + b" " * MAX_REQUEST_BODY),
        ("many keys", b"{" + b",".join(b'"k%d": 1' % i for i in range(6000)) + b"}"),
        ("long serial", good.replace(dev.serial.encode(), b"S" * 40_000)),
    ]


def test_api_rejects_oversized_and_malformed_bodies(gw: Gateway, report: Report) -> None:
    dev = Device("SN-HARD")
    gw.ctx.registry.add_device(dev.serial, dev.factory_public, "acme", "cjb-appliance")
    before = snapshot(gw.layout)
    cases = _hostile_bodies(dev, gw.nonce())
    answers: dict[str, int] = {}
    refused = Tally()
    wrong: dict[str, str] = {}
    for what, body in cases:
        gw.clock.offset += 2.0  # the enrollment rate limit is not what this tests
        headers = {SIGNATURE_HEADER: dev.sign(body), "Content-Type": "application/json"}
        r = gw.request("POST", "/v1/enroll", data=body, headers=headers)
        answers[what] = r.status
        named = bool(r.body and r.body.get("error") and r.body.get("message"))
        if not refused.add(400 <= r.status < 500 and named, f"{what}: {r.status}"):
            wrong[what] = f"{r.status} {r.text[:200]}"
    unchanged = snapshot(gw.layout) == before
    report(
        "api-hostile-bodies", *refused.counts,
        f"413 for the oversized one: {answers['over the limit']}, state unchanged: {unchanged} "
        f"{refused.lost_note()}".rstrip(),
        means="hostile bodies refused 4xx with an error name and message (lost = 2xx, 5xx, "
        "no reason)",
    )  # fmt: skip
    assert not wrong, wrong
    assert answers["over the limit"] == 413
    assert unchanged
    assert gw.nonce()  # still serving


def _raw(gw: Gateway, request: bytes) -> bytes:
    ctx = ssl.create_default_context(cafile=str(gw.layout.ca_cert))
    with (
        socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        # The server may answer and close while we are still sending an oversized request;
        # what it answered (if anything) is still read below.
        with contextlib.suppress(ssl.SSLError, OSError):
            tls.sendall(request)
        out = b""
        try:
            while chunk := tls.recv(65536):
                out += chunk
        except (TimeoutError, ssl.SSLError, OSError):
            pass
        return out


def test_api_survives_hostile_http_framing(gw: Gateway, report: Report) -> None:
    head = b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    cases = {
        "content-length lie": head + b"Content-Length: 99999999999\r\n\r\n{}",
        "negative length": head + b"Content-Length: -5\r\n\r\n{}",
        "two lengths": head + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        "huge header": head + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n",
        "many headers": head + b"".join(b"X-%d: 1\r\n" % i for i in range(500)) + b"\r\n",
        "bad chunking": head + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        "chunked overflow": head
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"4000\r\n" + b" " * 0x4000 + b"\r\n" for _ in range(6))
        + b"0\r\n\r\n",
        "garbage": b"\x16\x03\x01" + bytes(range(256)) * 4,
    }
    statuses: dict[str, int | None] = {}
    refused = Tally()
    replies: dict[str, bytes] = {}

    async def alive() -> int:
        async with aiohttp.ClientSession() as s:
            return (await gw.arequest(s, "POST", "/v1/enroll/nonce")).status

    for what, request in cases.items():
        reply = replies[what] = _raw(gw, request)
        m = re.match(rb"HTTP/1\.[01] (\d{3})", reply)
        status = statuses[what] = int(m.group(1)) if m else None  # None: the server closed
        # Refused (4xx or closed) and the server still answers the next client.
        refused.add(
            (status is None or 400 <= status < 500) and asyncio.run(alive()) in (200, 429),
            f"{what}: {status}",
        )
    closed = sum(v is None for v in statuses.values())
    report(
        "api-hostile-framing", *refused.counts,
        f"{len(cases) - closed} answered 4xx, {closed} closed {refused.lost_note()}".rstrip(),
        means="hostile requests refused (4xx or connection closed, never 2xx/5xx) with the "
        "server answering the next client",
    )  # fmt: skip
    for what, status in statuses.items():
        assert status is None or 400 <= status < 500, (what, replies[what][:300])
    # 413, or closed mid-send when the server refuses before we finish writing (a race the
    # deterministic oversized-body test in tests/test_control_api.py does not have).
    assert statuses["chunked overflow"] in (413, None), statuses
    assert asyncio.run(alive()) in (200, 429)


# -- the gateway units, booted ---------------------------------------------------------------
# PID 1 here is not systemd, so the units run under a real systemd in a container
# (docs/platform.md):
#
#   cjbunit<run>-gw (network namespace made here, loopback only: nothing leaves it)
#     systemd-nspawn --boot of the cached Debian base root (/var/cache/cjb-image/base)
#       + gateway/systemd/*.service and the sysusers file, copied verbatim
#       + /opt/cjb/bin/cjb running this checkout (bind-mounted read-only at /opt/cjb/checkout:
#         not at its own path, which may lie under /tmp, hidden from units by PrivateTmp=)
#       cjb-gateway-api.service ── HTTPS [::]:8443
#       cjb-gateway-dataplane.service ── wireguard-go, one static tenant, tc-eBPF fast path

# The image build's cache (the base root is built there when missing, as `cjb image build`
# does); CJB_IMAGE_CACHE points elsewhere, e.g. an empty folder to try a fresh machine.
IMAGE_CACHE = Path(os.environ.get("CJB_IMAGE_CACHE", "/var/cache/cjb-image"))
CHECKOUT = Path("/opt/cjb/checkout")  # where the container sees this checkout
CAP_BITS = {"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_PERFMON": 38, "CAP_BPF": 39}
LAUNCHER = """#!/usr/bin/python3
# The test's stand-in for an installed /opt/cjb: this checkout and its venv's libraries.
import sys
sys.path[:0] = ["/opt/cjb/src", "{site}"]
from cjb.cli.main import main
sys.exit(main())
"""


def _prepare_root(root: Path, base: Path, run: str) -> dict[str, object]:
    subprocess.run(["tar", "-xf", str(base), "-C", str(root)], check=True, timeout=300)
    units = root / "etc/systemd/system"
    for unit in (ROOT / "gateway/systemd").glob("*.service"):
        shutil.copy(unit, units / unit.name)
    sysusers = root / "etc/sysusers.d"
    sysusers.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "gateway/systemd/cjb-gateway.sysusers.conf", sysusers / "cjb-gateway.conf")
    tmpfiles = root / "etc/tmpfiles.d"
    tmpfiles.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "gateway/systemd/cjb-gateway.tmpfiles.conf", tmpfiles / "cjb-gateway.conf")
    site = CHECKOUT / next((ROOT / ".venv/lib").glob("python3*/site-packages")).relative_to(ROOT)
    (root / "opt/cjb/bin").mkdir(parents=True)
    (root / "opt/cjb/src").mkdir()
    (root / CHECKOUT.relative_to("/")).mkdir()
    (root / "opt/cjb/src/cjb").symlink_to(CHECKOUT)
    launcher = root / "opt/cjb/bin/cjb"
    launcher.write_text(LAUNCHER.format(site=site))
    launcher.chmod(0o755)
    config = json.loads((ROOT / "gateway/systemd/gateway.json").read_text())
    config["wireguard"]["ifname"] = f"cjbu{run}wg"  # unique on the machine (docs/platform.md)
    kernel = (ROOT / "gateway/dataplane/bpf/xlat.bpf.o").exists()
    config["tenants"] = {
        "acme": {
            "vni": 100,
            "appliance": "fd63:6a62:77::100",
            "wireguard_public_key": public_key(generate_private_key()),
            "fast_path": "kernel" if kernel else "userspace",
        }
    }
    (root / "etc/cjb").mkdir(parents=True)
    (root / "etc/cjb/gateway.json").write_text(json.dumps(config, indent=2))
    return config


class Container:
    def __init__(self, init: int) -> None:
        self.init = init

    def run(self, *argv: str, check: bool = True) -> str:
        done = subprocess.run(
            ["nsenter", "-t", str(self.init), "-m", "-p", "-n", "-u", "-i", *argv],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if check:
            assert done.returncode == 0, f"{argv}: {done.returncode}\n{done.stdout}{done.stderr}"
        return done.stdout

    def show(self, unit: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, "-p", "MainPID,NRestarts,ActiveState,User")
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def proc_status(self, pid: int | str) -> dict[str, str]:
        out = self.run("cat", f"/proc/{pid}/status")
        return {k: v.strip() for k, _, v in (ln.partition(":") for ln in out.splitlines())}

    def cgroup_pids(self, unit: str) -> set[int]:
        """Processes in the unit's cgroup (read from /proc: the hierarchy may be v1 or v2)."""
        out = self.run("sh", "-c", f"grep -l '/{unit}$' /proc/[0-9]*/cgroup", check=False)
        return {int(line.split("/")[2]) for line in out.split()}

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.3)
        journal = self.run("journalctl", "-b", "--no-pager", "-n", "80", check=False)
        raise AssertionError(f"timed out waiting for {what}:\n{journal}")

    def status(self) -> dict[str, Any]:
        out = self.run("cat", "/run/cjb-gateway/status.json", check=False)
        try:
            doc: dict[str, Any] = json.loads(out)
        except ValueError:
            return {}
        return doc


def _base_root() -> Path:
    return labkit.cached_base_root(IMAGE_CACHE)


def _cap_mask(names: frozenset[str]) -> int:
    return sum(1 << CAP_BITS[n] for n in names)


@contextlib.contextmanager
def _booted(run: str, base: Path) -> Iterator[tuple[Container, dict[str, object], Path]]:
    ns = f"cjbunit{run}-gw"
    with labkit.nspawn_runtime_dir():
        work = Path(tempfile.mkdtemp(prefix=f"cjbunit{run}-"))
        proc: subprocess.Popen[bytes] | None = None
        try:
            subprocess.run(["ip", "netns", "add", ns], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
            (work / "root").mkdir(parents=True)
            config = _prepare_root(work / "root", base, run)
            log = (work / "nspawn.log").open("wb")
            proc = subprocess.Popen(
                ["systemd-nspawn", "--boot", "-D", str(work / "root"), "--keep-unit",
                 "--register=no", f"--network-namespace-path=/run/netns/{ns}",
                 "--capability=CAP_NET_ADMIN,CAP_NET_RAW,CAP_BPF,CAP_PERFMON",
                 "--bind=/dev/net/tun", f"--bind-ro={ROOT}:{CHECKOUT}", "--console=passive",
                 # nspawn's own seccomp filter refuses bpf(2) (systemd 252); a host has no such
                 # outer filter, so let it through to what the unit allows.
                 "--system-call-filter=bpf"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            log.close()
            box = Container(labkit.container_init(proc.pid, timeout=30))
            box.wait(
                "the container to boot",
                lambda: (
                    box.run("systemctl", "is-system-running", check=False).strip()
                    in ("running", "degraded")
                ),
            )
            yield box, config, work
        finally:
            if proc is not None:
                labkit.stop_container(proc)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
            shutil.rmtree(work, ignore_errors=True)
    assert ns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


@pytest.mark.root
@pytest.mark.slow
def test_gateway_units_run_the_gateway_under_systemd(report: Report) -> None:
    """Both gateway units, unchanged, start their services under systemd with every
    sandboxing option in force; the data plane reaches a running tenant (WireGuard,
    VXLAN, nftables, AF_PACKET worker, tc-eBPF fast path) as cjb-gw-data with exactly
    its four capabilities, the API as cjb-gw-api; each user reads its own secrets and not
    the other's; the operator listener answers /metrics on loopback, the device listener
    does not; a restart and a kill -9 of the data plane leave wireguard-go (and so the
    tunnel) running, and the new daemon adopts it."""
    if os.geteuid() != 0:
        pytest.skip("needs root: systemd-nspawn and a network namespace")
    missing = [t for t in ("systemd-nspawn", "nsenter", "wireguard-go") if not shutil.which(t)]
    if missing:
        pytest.skip(f"missing {missing}: apt-get install -y --no-install-recommends "
                    "systemd-container util-linux wireguard-go")  # fmt: skip
    base = _base_root()
    if not any((ROOT / ".venv/lib").glob("python3*/site-packages")):
        pytest.skip(
            f"no {ROOT}/.venv: the container runs this checkout with its libraries (make setup)"
        )
    run = uuid.uuid4().hex[:6]
    api, dataplane = "cjb-gateway-api.service", "cjb-gateway-dataplane.service"
    with _booted(run, base) as (box, config, work):
        box.run("systemd-tmpfiles", "--create", "/etc/tmpfiles.d/cjb-gateway.conf")
        out = box.run("/opt/cjb/bin/cjb", "gateway", "init", "--state-dir",
                      "/var/lib/cjb-gateway", "--endpoint", "gw.invalid:51820",
                      "--api-user", "cjb-gw-api", "--dataplane-user", "cjb-gw-data",
                      "--operator", "boot")  # fmt: skip
        token = out.strip().splitlines()[-1]
        matrix = _privilege_matrix(box)
        report(
            "privilege-separation-systemd", *matrix.counts, matrix.lost_note(),
            means="reads of each secret as each unit's user that went as the layout says "
            "(own secrets readable, the other's refused)",
        )  # fmt: skip
        verify = box.run("systemd-analyze", "verify", "--man=no", f"/etc/systemd/system/{api}",
                         f"/etc/systemd/system/{dataplane}", check=False)  # fmt: skip
        assert not verify.strip(), verify
        boot_means = (
            "units active as their own users (cjb-gw-api, cjb-gw-data) with exactly their "
            "capabilities, no_new_privs and seccomp, the data plane's tenant running"
        )

        def tenant_running() -> bool:
            t = box.status().get("tenants", {}).get("acme", {})
            return bool(t.get("state") == "running")

        try:
            box.run("systemctl", "start", api, dataplane)
            box.wait("the data plane's tenant to run", tenant_running)
        except AssertionError as e:
            report("systemd-units-boot", 2, 0, 2, f"did not start: {str(e)[:200]}",
                   means=boot_means)  # fmt: skip
            raise
        status = box.status()
        acme = status["tenants"]["acme"]
        assert not status["errors"], status["errors"]
        fast = acme["fast_path"]
        assert fast["error"] is None, fast
        # The API answers over HTTPS, from its sandbox, with a nonce.
        ca = work / "root/var/lib/cjb-gateway/api/ca/ca.pem"
        code = (
            "import json, ssl, sys, urllib.request, urllib.error\n"
            "ctx = ssl.create_default_context(cafile=sys.argv[1])\n"
            "req = urllib.request.Request('https://[::1]:8443/v1/enroll/nonce', method='POST')\n"
            "print(json.load(urllib.request.urlopen(req, context=ctx, timeout=10))['nonce'])\n"
            "auth = {'Authorization': 'Bearer ' + sys.argv[2]}\n"
            "for url in ('https://[::1]:8443/metrics', 'https://127.0.0.1:8444/metrics'):\n"
            "    try:\n"
            "        r = urllib.request.urlopen(urllib.request.Request(url, headers=auth),\n"
            "                                   context=ctx, timeout=10)\n"
            "        body = r.read()\n"
            "        print(r.status, b'cjb_devices' in body, b'cjb_dataplane_up 1.0' in body)\n"
            "    except urllib.error.HTTPError as e:\n"
            "        print(e.code)\n"
        )
        with netns(f"cjbunit{run}-gw"):
            answers = subprocess.run([sys.executable, "-c", code, str(ca), token],
                                     capture_output=True, text=True, timeout=30,
                                     check=False)  # fmt: skip
        assert answers.returncode == 0, answers.stderr[-2000:]
        nonce, device_metrics, operator_metrics = answers.stdout.split("\n")[:3]
        assert nonce.strip() and device_metrics == "404", answers.stdout
        # ... with the data plane's counters: the API (cjb-gw-api) reads its status file.
        assert operator_metrics == "200 True True", answers.stdout

        seen: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
        booted = Tally()
        for unit in (api, dataplane):
            props = box.show(unit)
            st = box.proc_status(props["MainPID"]) if props.get("MainPID", "0") != "0" else {}
            seen[unit] = props, st
            user = str(PROFILES[unit].user)
            uid = box.run("id", "-u", user).strip()
            want = _cap_mask(PROFILES[unit].caps)
            booted.add(
                props["ActiveState"] == "active"
                and props["User"] == user
                and st.get("Uid", "").split()[:1] == [uid]
                and int(st.get("CapEff", "0"), 16) == want
                and int(st.get("CapBnd", "0"), 16) == want
                and (st.get("NoNewPrivs"), st.get("Seccomp")) == ("1", "2"),
                unit,
            )
        report(
            "systemd-units-boot", *booted.counts,
            f"api as cjb-gw-api, dataplane as cjb-gw-data, fast path {fast['mode']} "
            f"{booted.lost_note()}".rstrip(),
            means=boot_means,
        )  # fmt: skip
        for unit, (props, st) in seen.items():
            user = str(PROFILES[unit].user)
            assert props["ActiveState"] == "active" and props["User"] == user, props
            assert st["Uid"].split()[0] == box.run("id", "-u", user).strip(), st["Uid"]
            want = _cap_mask(PROFILES[unit].caps)
            assert int(st["CapEff"], 16) == want, (unit, st["CapEff"])
            assert int(st["CapBnd"], 16) == want, (unit, st["CapBnd"])
            assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2", (unit, st)

        main = int(box.show(dataplane)["MainPID"])
        (wg,) = box.cgroup_pids(dataplane) - {main}
        assert box.run("cat", f"/proc/{wg}/comm").strip() == "wireguard-go"
        wg_caps = int(box.proc_status(wg)["CapEff"], 16)
        assert wg_caps == _cap_mask(DATAPLANE_CAPS), hex(wg_caps)

        def adopted(old: int) -> Callable[[], bool]:
            def check() -> bool:
                new = int(box.show(dataplane)["MainPID"])
                return new not in (0, old) and box.status().get("pid") == new and tenant_running()

            return check

        kept = Tally()
        waits: dict[str, str] = {}
        for what, action in (
            ("restart", ["systemctl", "restart", dataplane]),
            ("kill -9", ["systemctl", "kill", "--signal=KILL", "--kill-who=main", dataplane]),
        ):
            old = int(box.show(dataplane)["MainPID"])
            box.run(*action)
            try:
                box.wait(f"the data plane back after {what}", adopted(old))
            except AssertionError as e:
                waits[what] = str(e)[-3000:]
            kept.add(what not in waits and wg in box.cgroup_pids(dataplane), what)
        report(
            "dataplane-restart-keeps-tunnel", *kept.counts,
            f"NRestarts {box.show(dataplane)['NRestarts']} {kept.lost_note()}".rstrip(),
            means="restarts / kill -9 of the data plane after which a new daemon adopted the "
            "running wireguard-go and the tenant ran again",
        )  # fmt: skip
        assert not waits, waits
        assert box.show(dataplane)["NRestarts"] == "1"
        assert not kept.lost, f"wireguard-go did not survive: {kept.lost_note()}"
        ifname = config["wireguard"]["ifname"]  # type: ignore[index]
        assert "listening port: 51820" in box.run("wg", "show", str(ifname))
        journal = box.run("journalctl", "-b", "--no-pager", "-u", api, "-u", dataplane)
        for bad in ("Traceback", "SIGSYS", "Bad system call", "Operation not permitted"):
            assert bad not in journal, f"{bad!r} in the journal:\n{journal[-4000:]}"


# (path under /var/lib/cjb-gateway, readable by cjb-gw-api?, readable by cjb-gw-data?)
READ_POLICY = (
    ("api/ca/ca.key", True, False),
    ("api/tls/server.key", True, False),
    ("api/registry.sqlite3", True, False),
    ("api/gateway.toml", True, False),
    ("dataplane/wireguard/private.key", False, True),
    ("export/desired.json", True, True),
    ("export/wireguard.pub", True, True),
)


def _privilege_matrix(box: Container) -> Tally:
    """Try every READ_POLICY read as each user inside the container, counting each."""
    matrix = Tally()
    for rel, api_reads, data_reads in READ_POLICY:
        for user, allowed in (("cjb-gw-api", api_reads), ("cjb-gw-data", data_reads)):
            path = f"/var/lib/cjb-gateway/{rel}"
            out = box.run("runuser", "-u", user, "--", "sh", "-c",
                          f"test -s {path} && cat {path} > /dev/null && echo read",
                          check=False)  # fmt: skip
            read = out.strip() == "read"
            matrix.add(read == allowed, f"{user} {'could' if read else 'could not'} read {rel}")
    return matrix
