"""The Debian packages, installed the way an operator does it, on a fresh Debian 12 root.

tools/deb/build.py (`make deb`): cjb-gateway + cjb-appliance N from this checkout, and
    cjb-gateway N+1 from a copy with a bumped version and one extra registry migration
lintian on both N packages: no error or warning beyond the justified overrides
cjbdeb<run>-gw (network namespace made here, loopback only: nothing leaves it)
  systemd-nspawn --boot of the cached Debian base root (/var/cache/cjb-image/base)
    apt-get install ./cjb-gateway_N.deb, `cjb gateway init`, both units enabled and active,
    curl of the HTTPS API, an appliance (tests/controlkit.Device) enrolls over curl and
    the data plane gives its tenant a WireGuard peer
    apt-get install ./cjb-gateway_N+1.deb: registry migrated, keys, the enrolled device,
    the tunnel (same wireguard-go, same peer) and the edited conffile survive
    apt-get install --allow-downgrades ./cjb-gateway_N.deb: refused by the package, the
    registry byte for byte as it was, N+1 still installed and running
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import labkit
import pytest
from controlkit import Device

from cjb.appliance.image import ImageError
from cjb.appliance.image.build import BuildOptions, check, check_appliance_deb
from cjb.appliance.image.progress import Progress
from cjb.appliance.image.rootfs import chroot_argv, install_appliance_deb
from cjb.common.control.protocol import SIGNATURE_HEADER
from cjb.gateway.control.migrations import newest_version
from cjb.gateway.control.statedir import StateDir

ROOT = Path(__file__).resolve().parent.parent
BASE_ROOTS = Path("/var/cache/cjb-image/base")
API, DATAPLANE = "cjb-gateway-api.service", "cjb-gateway-dataplane.service"
NEXT_VERSION = "0.1.1"
NEWEST = newest_version()  # the schema version N knows; N+1 adds one more
# The test-only migration N+1 carries: a new table and a new column on a populated table.
EXTRA_MIGRATION = """
MIGRATIONS = (
    *MIGRATIONS,
    (
        max(v for v, _ in MIGRATIONS) + 1,
        (
            "CREATE TABLE upgrade_probe (id INTEGER PRIMARY KEY, note TEXT)",
            "ALTER TABLE devices ADD COLUMN upgrade_note TEXT",
        ),
    ),
)
"""

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _need() -> Path:
    if os.geteuid() != 0:
        pytest.skip("needs root: systemd-nspawn, a network namespace, dpkg-deb")
    tools = ("systemd-nspawn", "nsenter", "dpkg-deb", "clang", "curl", "strip")
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        pytest.skip(f"missing {missing}: apt-get install systemd-container clang binutils curl")
    # The image tooling's cached Debian root, built first when the cache has none.
    return labkit.cached_base_root(BASE_ROOTS.parent)


def _build(source: Path, out: Path, *only: str) -> None:
    argv = [sys.executable, str(ROOT / "tools/deb/build.py"), "--source", str(source),
            "--out", str(out)] + [a for k in only for a in ("--only", k)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{'N': gateway N, 'appliance': appliance N, 'N+1': gateway N+1}."""
    _need()
    tmp = tmp_path_factory.mktemp("debs")
    started = time.monotonic()
    _build(ROOT, tmp / "n")
    nxt = tmp / "next-src"
    shutil.copytree(ROOT, nxt, ignore=shutil.ignore_patterns(
        ".venv", ".git", "dist", "build", "*.egg-info", ".*_cache", "__pycache__", "results",
        ".typecheck", ".hypothesis", "*.bpf.o"))  # fmt: skip
    pyproject = nxt / "pyproject.toml"
    text = pyproject.read_text()
    assert 'version = "0.1.0"' in text
    pyproject.write_text(text.replace('version = "0.1.0"', f'version = "{NEXT_VERSION}"', 1))
    migrations = nxt / "gateway/control/migrations.py"
    text = migrations.read_text()
    marker = "\n\ndef newest_version()"
    migrations.write_text(text.replace(marker, EXTRA_MIGRATION + marker, 1))
    _build(nxt, tmp / "next", "gateway")
    print(f"built three packages in {time.monotonic() - started:.0f} s")
    (gw_n,) = (tmp / "n").glob("cjb-gateway_0.1.0-1_*.deb")
    (app_n,) = (tmp / "n").glob("cjb-appliance_0.1.0-1_*.deb")
    (gw_next,) = (tmp / "next").glob(f"cjb-gateway_{NEXT_VERSION}-1_*.deb")
    return {"N": gw_n, "appliance": app_n, "N+1": gw_next}


def test_lintian_is_clean_beyond_the_justified_overrides(debs: dict[str, Path]) -> None:
    if not shutil.which("lintian"):
        pytest.skip("lintian is not installed: apt-get install --no-install-recommends lintian")
    done = subprocess.run(
        ["lintian", "--tag-display-limit", "0", str(debs["N"]), str(debs["appliance"])],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    tags = [ln for ln in done.stdout.splitlines() if ln[:2] in ("E:", "W:")]
    assert not tags, "\n".join(tags)
    assert done.returncode == 0, done.stderr
    # Every override in the file is still needed (lintian reports unused ones as I:/N:).
    unused = [ln for ln in done.stdout.splitlines() if "unused-override" in ln]
    assert not unused, "\n".join(unused)


def test_appliance_package_installs_on_a_fresh_board(debs: dict[str, Path]) -> None:
    """cjb-appliance on the same fresh Debian 12 root: installs from its .deb with what the
    base has, enables the agent's unit, and the agent's command runs from /opt/cjb."""
    base = _need()
    with _booted(uuid.uuid4().hex[:6], base) as box:
        shutil.copy(debs["appliance"], box.root / "root/debs" / debs["appliance"].name)
        box.run("apt-get", "install", "-y", "--no-install-recommends",
                f"/root/debs/{debs['appliance'].name}", timeout=600)  # fmt: skip
        assert box.run("systemctl", "is-enabled", "cjb-appliance.service").strip() == "enabled"
        assert (box.root / "etc/systemd/network/10-br-lan.netdev").is_file()
        out = box.run("cjb", "appliance", "status", "--help")
        assert "Usage: cjb appliance status" in out, out
        box.run("/opt/cjb/bin/python", "-c", "import zeroconf, cjb.appliance.agent")
        box.run("apt-get", "purge", "-y", "cjb-appliance")
        assert not (box.root / "opt/cjb").exists(), "purge left /opt/cjb behind"


def test_image_build_installs_the_appliance_package(debs: dict[str, Path], tmp_path: Path) -> None:
    """`cjb image build --appliance-deb`: the agent step is dpkg in the image's root, offline,
    from the recipe's base packages; the result is the package's files, unit enabled."""
    base = _need()
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(["tar", "-xf", str(base), "-C", str(root)], check=True, timeout=300)
    lines: list[str] = []
    assert check(BuildOptions(appliance_deb=debs["appliance"]), lines.append), lines
    assert check_appliance_deb(debs["appliance"], "amd64") == "0.1.0"
    with pytest.raises(ImageError, match="not a cjb-appliance package"):
        check_appliance_deb(debs["N"], "amd64")
    install_appliance_deb(root, debs["appliance"], Progress(lines.append, time.monotonic, 1), 0)
    status = subprocess.run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f",
                             "${Version} ${Status}", "cjb-appliance"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert status == "0.1.0-1 install ok installed"
    assert (root / "etc/systemd/system/multi-user.target.wants/cjb-appliance.service").is_symlink()
    done = subprocess.run(chroot_argv(root, ["cjb", "appliance", "status", "--help"]),
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert "Usage: cjb appliance status" in done.stdout, done.stdout + done.stderr
    assert not (root / "tmp/cjb-debs").exists()


def test_appliance_package_holds_what_the_image_installs(debs: dict[str, Path]) -> None:
    listing = subprocess.run(["dpkg-deb", "-c", str(debs["appliance"])], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
    overlay = ROOT / "image-build/overlay"
    for src in (p for p in overlay.rglob("*") if p.is_file()):
        rel = src.relative_to(overlay)
        where = f"./lib/systemd/system/{rel.name}" if rel.suffix == ".service" else f"./{rel}"
        assert where in listing, f"{rel} from the image's overlay is not in cjb-appliance"
    assert "./opt/cjb/bin/cjb" in listing and "zeroconf/" in listing
    assert "aiohttp/" not in listing, "gateway dependencies on the appliance"
    control = subprocess.run(["dpkg-deb", "-f", str(debs["appliance"]), "Depends"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "python3 (<< 3.12)" in control and "wireguard-go | wireguard-tools" in control


class Box:
    """The booted container: run commands in it (nsenter) and read its files."""

    def __init__(self, init: int, root: Path, ns: str) -> None:
        self.init, self.root, self.ns = init, root, ns

    def run(self, *argv: str, check: bool = True, timeout: float = 300) -> str:
        done = subprocess.run(
            ["nsenter", "-t", str(self.init), "-m", "-p", "-n", "-u", "-i", *argv],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if check:
            assert done.returncode == 0, f"{argv}: {done.returncode}\n{done.stdout}{done.stderr}"
        return done.stdout + done.stderr

    def rc(self, *argv: str) -> tuple[int, str]:
        done = subprocess.run(
            ["nsenter", "-t", str(self.init), "-m", "-p", "-n", "-u", "-i", *argv],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        return done.returncode, done.stdout + done.stderr

    def prop(self, unit: str, name: str) -> str:
        return self.run("systemctl", "show", unit, "-p", name, "--value").strip()

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.5)
        journal = self.run("journalctl", "-b", "--no-pager", "-n", "60", check=False)
        raise AssertionError(f"timed out waiting for {what}:\n{journal}")

    def curl(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """The host's curl in the container's network namespace, to https://gw.test:8443 (the
        name `cjb gateway init --san` gave the certificate) at the container's [::1]."""
        return subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.ns}", "curl", "-sS", "--max-time", "20",
             "--connect-to", "gw.test:8443:[::1]:8443", *argv],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip


@contextlib.contextmanager
def _booted(run: str, base: Path) -> Iterator[Box]:
    ns = f"cjbdeb{run}-gw"
    with labkit.nspawn_runtime_dir():
        work = Path(tempfile.mkdtemp(prefix=f"cjbdeb{run}-"))
        proc: subprocess.Popen[bytes] | None = None
        try:
            subprocess.run(["ip", "netns", "add", ns], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
            root = work / "root"
            root.mkdir()
            subprocess.run(["tar", "-xf", str(base), "-C", str(root)], check=True, timeout=300)
            (root / "root/debs").mkdir(parents=True)
            log = (work / "nspawn.log").open("wb")
            proc = subprocess.Popen(
                ["systemd-nspawn", "--boot", "-D", str(root), "--keep-unit", "--register=no",
                 f"--network-namespace-path=/run/netns/{ns}",
                 "--capability=CAP_NET_ADMIN,CAP_NET_RAW,CAP_BPF,CAP_PERFMON",
                 "--bind=/dev/net/tun", "--console=passive", "--system-call-filter=bpf"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            log.close()
            box = Box(labkit.container_init(proc.pid, timeout=30), root, ns)
            box.wait(
                "the container to boot",
                lambda: (
                    box.run("systemctl", "is-system-running", check=False).strip()
                    in ("running", "degraded")
                ),
            )
            yield box
        finally:
            if proc is not None:
                labkit.stop_container(proc)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
            shutil.rmtree(work, ignore_errors=True)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _enroll(box: Box, ca: Path, dev: Device, work: Path) -> dict[str, object]:
    """The appliance's enrollment, over real curl: a nonce, then the signed request."""
    done = box.curl("--cacert", str(ca), "-X", "POST", "https://gw.test:8443/v1/enroll/nonce")
    assert done.returncode == 0, done.stderr
    body = dev.body(json.loads(done.stdout)["nonce"])
    (work / "body.json").write_bytes(body)
    done = box.curl(
        "--cacert", str(ca), "-w", "\n%{http_code}", "-H", "Content-Type: application/json",
        "-H", f"{SIGNATURE_HEADER}: {dev.sign(body)}", "--data-binary", f"@{work / 'body.json'}",
        "https://gw.test:8443/v1/enroll",
    )  # fmt: skip
    text, _, code = done.stdout.rpartition("\n")
    assert code == "200", done.stdout + done.stderr
    reply: dict[str, object] = json.loads(text)
    return reply


def _query(db: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    """Read the registry from a copy (with its WAL, where a fresh migration may still be),
    so the live files are never opened by the test."""
    with tempfile.TemporaryDirectory() as tmp:
        for part in db.parent.glob(db.name + "*"):
            if not part.name.endswith("-shm"):
                shutil.copy(part, Path(tmp) / part.name)
        conn = sqlite3.connect(Path(tmp) / db.name)
        try:
            return list(conn.execute(sql, args))
        finally:
            conn.close()


def _schema(db: Path) -> list[int]:
    return [int(r[0]) for r in _query(db, "SELECT version FROM schema_migrations ORDER BY 1")]


def test_install_init_enroll_upgrade_and_refused_downgrade(
    debs: dict[str, Path], tmp_path: Path
) -> None:
    base = _need()
    run = uuid.uuid4().hex[:6]
    timings: dict[str, float] = {}
    with _booted(run, base) as box:
        for key in ("N", "N+1"):
            shutil.copy(debs[key], box.root / "root/debs" / debs[key].name)
        n, nxt = (f"/root/debs/{debs[k].name}" for k in ("N", "N+1"))

        # -- install N, the way the README says -------------------------------------------
        t = time.monotonic()
        box.run("apt-get", "install", "-y", "--no-install-recommends", n,
                timeout=600)  # fmt: skip
        timings["install"] = time.monotonic() - t
        assert box.run("dpkg-query", "-W", "-f", "${Version}", "cjb-gateway") == "0.1.0-1"
        user, data_user = box.prop(API, "User"), box.prop(DATAPLANE, "User")
        found = re.search(r"--state-dir (\S+)", box.prop(API, "ExecStart"))
        assert found, box.prop(API, "ExecStart")
        state = Path(found.group(1))
        layout = StateDir(state)
        for u in (user, data_user):
            assert u and box.run("getent", "passwd", u).startswith(f"{u}:")
        # The package's tmpfiles entry made each part with its owner before init.
        for part, owner in ((layout.api_dir, user), (layout.dataplane_dir, data_user)):
            assert box.run("stat", "-c", "%U %a", str(part)).strip() == f"{owner} 700"
        for unit in (API, DATAPLANE):  # nothing starts before `cjb gateway init`
            assert box.prop(unit, "ActiveState") == "inactive"
        box.run("cjb", "gateway", "init", "--state-dir", str(state), "--api-user", user,
                "--dataplane-user", data_user, "--san", "gw.test",
                "--endpoint", "gw.test:51820")  # fmt: skip
        conf = box.root / "etc/cjb/gateway.json"
        config = json.loads(conf.read_text())
        config["wireguard"]["ifname"] = ifname = f"cjbd{run}wg"  # unique on the machine
        conf.write_text(json.dumps(config, indent=2))
        box.run("systemctl", "enable", "--now", API, DATAPLANE)
        for unit in (API, DATAPLANE):
            box.wait(f"{unit} active", lambda u=unit: box.prop(u, "ActiveState") == "active")

        host_state = box.root / str(state).lstrip("/")
        host = StateDir(host_state)
        ca = host.ca_cert
        box.wait(
            "the API",
            lambda: (
                box.curl("--cacert", str(ca), "-o", "/dev/null", "https://gw.test:8443/").returncode
                == 0
            ),
        )
        done = box.curl("--cacert", str(ca), "-X", "POST", "https://gw.test:8443/v1/enroll/nonce")
        assert done.returncode == 0 and json.loads(done.stdout)["nonce"], done.stderr
        # The operator surface is not on the device listener (docs/operations.md).
        done = box.curl("--cacert", str(ca), "-o", "/dev/null", "-w", "%{http_code}",
                        "https://gw.test:8443/metrics")  # fmt: skip
        assert done.stdout == "404", done.stdout + done.stderr

        # -- an appliance enrolls; the data plane gives its tenant a tunnel peer ---------------
        first = Device("CJB-DEB-0001")
        (box.root / "srv/inventory.jsonl").write_text(first.record("acme") + "\n")
        box.run("runuser", "-u", user, "--", "cjb", "gateway", "device", "import",
                "--state-dir", str(state), "/srv/inventory.jsonl")  # fmt: skip
        enrolled = _enroll(box, ca, first, tmp_path)
        assert "BEGIN CERTIFICATE" in str(enrolled["device_certificate_pem"])

        def peers() -> str:
            return box.run("wg", "show", ifname, "peers", check=False)

        box.wait("the device's WireGuard peer", lambda: first.wg_public in peers())
        wg_pid = box.run("pidof", "wireguard-go").strip()
        secrets = (host.ca_key, host.ca_cert, host.server_key, host.wg_private, host.wg_public)
        keys = {p: _sha(p) for p in secrets}
        owners = box.run("find", str(state), "-printf", "%P %u %m\n")
        assert _schema(host.registry) == list(range(1, NEWEST + 1))

        # -- upgrade to N+1 (with a schema migration) -----------------------------------------
        t = time.monotonic()
        box.run("apt-get", "install", "-y", "--no-install-recommends", nxt, timeout=600)
        timings["upgrade"] = time.monotonic() - t
        assert box.run("dpkg-query", "-W", "-f", "${Version}", "cjb-gateway") == "0.1.1-1"
        for unit in (API, DATAPLANE):
            box.wait(f"{unit} active again", lambda u=unit: box.prop(u, "ActiveState") == "active")
        box.wait("the migration", lambda: _schema(host.registry) == list(range(1, NEWEST + 2)))
        assert {p: _sha(p) for p in keys} == keys, "keys changed in the upgrade"
        assert box.run("find", str(state), "-printf", "%P %u %m\n") == owners
        assert json.loads(conf.read_text())["wireguard"]["ifname"] == ifname, "conffile lost"
        row = _query(host.registry,
                     "SELECT state, wireguard_public_key FROM devices WHERE serial = ?",
                     first.serial)  # fmt: skip
        assert row == [("enrolled", first.wg_public)], row
        listed = box.run("runuser", "-u", user, "--", "cjb", "gateway", "device", "list",
                         "--state-dir", str(state))  # fmt: skip
        assert first.serial in listed and "enrolled" in listed, listed
        assert box.run("pidof", "wireguard-go").strip() == wg_pid, "the tunnel was restarted"
        assert first.wg_public in peers()
        second = Device("CJB-DEB-0002")  # the migrated registry takes new enrollments
        (box.root / "srv/inventory.jsonl").write_text(second.record("beta") + "\n")
        box.run("runuser", "-u", user, "--", "cjb", "gateway", "device", "import",
                "--state-dir", str(state), "/srv/inventory.jsonl")  # fmt: skip
        _enroll(box, ca, second, tmp_path)
        box.wait("the second device's peer", lambda: second.wg_public in peers())

        # -- a downgrade is refused before anything is unpacked -------------------------------
        box.run("systemctl", "stop", API)  # so the registry's bytes cannot move under us
        db = {p.name: p.read_bytes() for p in host.api_dir.glob("registry.sqlite3*")}
        code, out = box.rc("apt-get", "install", "-y", "--allow-downgrades", n)
        assert code != 0, out
        assert "refusing to install this version" in out, out
        newer = f"schema version {NEWEST + 1}, newer than this CJB knows ({NEWEST})"
        assert newer in out.replace("\ncjb: ", " "), out
        assert box.run("dpkg-query", "-W", "-f", "${Version} ${Status}", "cjb-gateway") == (
            "0.1.1-1 install ok installed"
        )
        assert {p.name: p.read_bytes() for p in host.api_dir.glob("registry.sqlite3*")} == db
        box.run("systemctl", "start", API)
        box.wait(
            "the API after the refused downgrade", lambda: box.prop(API, "ActiveState") == "active"
        )
        journal = box.run("journalctl", "-b", "--no-pager", "-u", API, "-u", DATAPLANE)
        for bad in ("Traceback", "SIGSYS", "Bad system call"):
            assert bad not in journal, f"{bad!r} in the journal:\n{journal[-4000:]}"
    print(f"timings: {timings}")
