"""The full firmware build and a boot of what it built (slow, root, network for packages).

One build per test session, from a snapshot of this checkout (so other edits during the run
cannot change the inputs), into /var/cache/cjb-image/test-build; the base root, .debs and
wheels stay cached under /var/cache/cjb-image between sessions, so CI can reuse them.

Boot test topology (the image's own systemd, unchanged unit, in namespaces made here):

    cjbimg<run>-site (systemd-nspawn --boot of the built root)    cjbimg<run>-lan
      br-lan (networkd) ── eth0 ════════ veth ════════════════════ lan0
    no route anywhere else: nothing from the image leaves these two namespaces.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import labkit
import pytest

from cjb.appliance.image.build import BuildOptions, BuildResult, build
from cjb.appliance.image.disk import root_offset
from cjb.appliance.image.flash import flash
from cjb.appliance.image.personalise import personalise
from cjb.common.netlink import netns

pytestmark = [pytest.mark.slow, pytest.mark.root]

CACHE = Path("/var/cache/cjb-image")
OUT = CACHE / "test-build"
SDE = 1764000000
GATEWAY_URL = "https://gw.lab.invalid:8443"
GATEWAY_DEPS = {"scapy", "aiohttp", "dnspython", "prometheus-client", "prometheus_client", "h11"}


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False


def _require_build_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: mmdebstrap --mode=root, chroot and systemd-nspawn")
    missing = [
        t
        for t in (
            "mmdebstrap",
            "mkfs.ext4",
            "debugfs",
            "sfdisk",
            "mkfs.vfat",
            "mcopy",
            "faketime",
            "systemctl",
            "unshare",
        )
        if shutil.which(t) is None
    ]
    if missing:
        pytest.skip(
            f"missing {missing}: apt-get install -y --no-install-recommends mmdebstrap "
            "e2fsprogs fdisk dosfstools mtools faketime systemd-container"
        )
    if not _reachable("pypi.org", 443):
        pytest.skip("no network to pypi.org:443: the build fetches the agent's wheels")
    if not any(CACHE.glob("base/*.tar")) and not _reachable("deb.debian.org", 80):
        pytest.skip("no cached base root and no network to the Debian mirror")


def _operator_ca(path: Path) -> Path:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cjb-test-operator-ca")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@dataclass(frozen=True)
class Built:
    result: BuildResult
    opts: BuildOptions
    lines: list[str]


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    _require_build_tools()
    work = tmp_path_factory.mktemp("image")
    snap = labkit.snapshot_checkout(work / "snapshot")
    opts = BuildOptions(
        out_dir=OUT,
        repo=snap,
        operator_ca=_operator_ca(work / "ca.pem"),
        gateway_url=GATEWAY_URL,
        cache_dir=CACHE,
        keep_root=True,
    )
    lines: list[str] = []
    os.environ["SOURCE_DATE_EPOCH"] = str(SDE)
    try:
        result = build(opts, echo=lines.append)
    finally:
        del os.environ["SOURCE_DATE_EPOCH"]
    return Built(result, opts, lines)


def test_build_outputs_and_manifest(built: Built) -> None:
    r = built.result
    manifest = json.loads(r.manifest.read_text())
    assert set(manifest["outputs"]) == {r.rootfs_tar.name, r.disk_image.name}
    assert manifest["outputs"][r.disk_image.name]["bytes"] == r.disk_image.stat().st_size
    debs = manifest["debian_packages"]
    for pkg in (
        "systemd:amd64",
        "python3:amd64",
        "wireguard-go:amd64",
        "wireguard-tools:amd64",
        "nftables:amd64",
        "linux-image-amd64:amd64",
    ):
        assert pkg in debs, pkg
    py = {name.lower() for name in manifest["python_packages"]}
    assert {"cjb", "pydantic", "pyroute2", "cryptography", "click"} <= py
    assert not py & GATEWAY_DEPS, f"gateway dependencies in the image: {py & GATEWAY_DEPS}"
    assert manifest["inputs"]["gateway_url"] == GATEWAY_URL
    assert manifest["source_date_epoch"] == SDE
    # Progress: every step printed with its elapsed time.
    assert sum("done in" in line for line in built.lines) == 7


def test_root_has_agent_units_networkd_and_operator_settings(built: Built) -> None:
    root = built.result.root_dir
    assert root is not None
    assert os.readlink(root / "usr/local/bin/cjb") == "/opt/cjb/bin/cjb"
    assert (root / "opt/cjb/bin/cjb").is_file()
    unit = (root / "etc/systemd/system/cjb-appliance.service").read_text()
    for line in (
        "Restart=on-failure",
        "Type=notify",
        "WatchdogSec=30s",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/cjb",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW",
    ):
        assert line in unit
    assert (root / "etc/systemd/system/multi-user.target.wants/cjb-appliance.service").is_symlink()
    watchdog = (root / "etc/systemd/system.conf.d/cjb-watchdog.conf").read_text()
    assert "RuntimeWatchdogSec=30s" in watchdog
    assert "Kind=bridge" in (root / "etc/systemd/network/10-br-lan.netdev").read_text()
    assert "DHCP=yes" in (root / "etc/systemd/network/30-br-lan.network").read_text()
    assert (root / "etc/cjb/gateway-url").read_text() == f"{GATEWAY_URL}\n"
    assert (root / "etc/cjb/operator-ca.pem").read_bytes() == built.opts.operator_ca.read_bytes()  # type: ignore[union-attr]
    assert not (root / "etc/cjb/factory/serial").exists()  # personalised per unit, later
    assert (root / "etc/machine-id").read_bytes() == b""
    assert os.readlink(root / "etc/resolv.conf") == "../run/systemd/resolve/stub-resolv.conf"


def test_disk_image_is_gpt_with_bootable_esp_and_root(built: Built) -> None:
    disk = built.result.disk_image
    table = json.loads(
        subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, check=True).stdout
    )["partitiontable"]
    assert table["label"] == "gpt"
    esp, root = table["partitions"]
    assert esp["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" and esp["name"] == "ESP"
    assert root["name"] == "cjb-root"
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    at = f"{disk}@@{esp['start'] * 512}"
    listing = subprocess.run(
        ["mdir", "-b", "-/", "-i", at, "::/"], capture_output=True, text=True, env=env, check=True
    ).stdout
    for path in (
        "::/EFI/BOOT/BOOTX64.EFI",
        "::/vmlinuz",
        "::/initrd.img",
        "::/loader/entries/cjb.conf",
    ):
        assert path in listing
    entry = subprocess.run(
        ["mtype", "-i", at, "::/loader/entries/cjb.conf"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert f"root=PARTUUID={root['uuid'].lower()}" in entry
    device = f"{disk}?offset={root_offset(disk)}"
    url = subprocess.run(
        ["debugfs", "-R", "cat /etc/cjb/gateway-url", device],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert url == f"{GATEWAY_URL}\n"


def test_same_inputs_give_the_same_manifest(built: Built, tmp_path: Path) -> None:
    opts = BuildOptions(
        **{**built.opts.__dict__, "out_dir": tmp_path / "again", "keep_root": False}
    )
    os.environ["SOURCE_DATE_EPOCH"] = str(SDE)
    try:
        again = build(opts, echo=lambda _l: None)
    finally:
        del os.environ["SOURCE_DATE_EPOCH"]
    assert again.manifest.read_text() == built.result.manifest.read_text()
    shutil.rmtree(tmp_path / "again")


def test_personalise_and_flash_the_built_disk_image(built: Built, tmp_path: Path) -> None:
    copy = tmp_path / "unit.img"
    subprocess.run(["cp", "--sparse=always", str(built.result.disk_image), str(copy)], check=True)
    record = personalise(copy, "CJB-IMG-0001", tenant="t1")
    device = f"{copy}?offset={root_offset(copy)}"
    serial = subprocess.run(
        ["debugfs", "-R", "cat /etc/cjb/factory/serial", device],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert serial == "CJB-IMG-0001\n" and record.tenant == "t1"
    target = tmp_path / "card.bin"
    digest = flash(copy, target, echo=lambda _l: None)
    assert target.stat().st_size == copy.stat().st_size and len(digest) == 64


# -- boot -------------------------------------------------------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def site() -> Iterator[tuple[str, str]]:
    run = uuid.uuid4().hex[:6]
    site, lan = f"cjbimg{run}-site", f"cjbimg{run}-lan"
    try:
        _ip("netns", "add", site)
        _ip("netns", "add", lan)
        _ip("-n", site, "link", "add", "eth0", "type", "veth", "peer", "name", "lan0", "netns", lan)
        _ip("-n", site, "link", "set", "eth0", "up")
        _ip("-n", lan, "link", "set", "lan0", "up")
        yield site, lan
    finally:
        for ns in (site, lan):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"cjbimg{run}" not in left


@pytest.fixture
def nspawn_dir() -> Iterator[None]:
    with labkit.nspawn_runtime_dir():
        yield


def _inside(init: int, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", "-t", str(init), "-m", "-p", "-n", "-u", "-i", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_built_root_boots_and_runs_the_agent_under_its_unit(
    built: Built, site: tuple[str, str], nspawn_dir: None, tmp_path: Path
) -> None:
    if shutil.which("systemd-nspawn") is None:
        pytest.skip(
            "systemd-nspawn missing: apt-get install -y --no-install-recommends systemd-container"
        )
    root = built.result.root_dir
    assert root is not None
    personalise(root, "CJB-BOOT-0001", force=True)
    site_ns, _lan = site
    log = (tmp_path / "nspawn.log").open("w")
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            "systemd-nspawn",
            "--boot",
            "-D",
            str(root),
            "--volatile=overlay",
            "--keep-unit",
            "--register=no",
            f"--network-namespace-path=/run/netns/{site_ns}",
            "--capability=CAP_NET_ADMIN",
            "--bind=/dev/net/tun",
            "--console=passive",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        init = labkit.container_init(proc.pid)
        deadline = time.monotonic() + 60
        status: dict[str, object] = {}
        while time.monotonic() < deadline:
            active = _inside(init, "systemctl", "is-active", "cjb-appliance.service").stdout.strip()
            out = _inside(init, "cjb", "appliance", "status", "--json")
            if active == "active" and out.returncode == 0:
                status = json.loads(out.stdout)
                break
            time.sleep(0.5)
        boot_seconds = time.monotonic() - started
        journal = _inside(init, "journalctl", "-b", "--no-pager", "-u", "cjb-appliance").stdout
        assert status, f"agent not active with a status after 60 s:\n{journal[-3000:]}"
        print(f"boot to cjb-appliance.service active with status: {boot_seconds:.1f} s")
        assert status["serial"] == "CJB-BOOT-0001"
        assert status.get("mode") == "enrolled" and status.get("status_line")
        bridge = _inside(init, "ip", "-j", "link", "show", "eth0").stdout
        assert json.loads(bridge)[0].get("master") == "br-lan", "networkd did not bridge eth0"
        props = _inside(
            init,
            "systemctl",
            "show",
            "cjb-appliance.service",
            "-p",
            "CapabilityBoundingSet,NoNewPrivileges,ProtectSystem,ReadWritePaths,Restart,NRestarts",
        ).stdout
        assert "CapabilityBoundingSet=cap_net_admin cap_net_raw" in props
        assert "NoNewPrivileges=yes" in props and "ProtectSystem=strict" in props
        assert "Restart=on-failure" in props and "NRestarts=0" in props
        failed = _inside(init, "systemctl", "--failed", "--plain", "--no-legend").stdout
        assert failed.strip() == "", f"failed units in the image: {failed}"
        _hung_agent_is_restarted_by_the_watchdog(init)
    finally:
        labkit.stop_container(proc)
        log.close()


def _unit_props(init: int, *names: str) -> dict[str, str]:
    out = _inside(init, "systemctl", "show", "cjb-appliance.service", "-p", ",".join(names))
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def _host_pid(init: int, inner: int) -> int:
    """The host's PID of the container's process `inner` (same PID namespace as `init`)."""
    ns = os.readlink(f"/proc/{init}/ns/pid")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != ns:
                continue
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        nspid = next(ln for ln in status.splitlines() if ln.startswith("NSpid:")).split()
        if int(nspid[-1]) == inner:
            return int(entry)
    raise AssertionError(f"no host process for container PID {inner}")


def _hung_agent_is_restarted_by_the_watchdog(init: int) -> None:
    """SIGSTOP the agent (it stops sending WATCHDOG=1): systemd must kill it after
    WatchdogSec and start a new one, which says READY=1 again."""
    props = _unit_props(init, "Type", "WatchdogUSec", "MainPID", "NRestarts")
    assert props["Type"] == "notify" and props["WatchdogUSec"] == "30s", props
    hung = props["MainPID"]
    os.kill(_host_pid(init, int(hung)), signal.SIGSTOP)  # the image has no kill(1)
    stopped = time.monotonic()
    deadline = stopped + 30 + 5 + 60  # WatchdogSec + RestartSec + a slow start
    after: dict[str, str] = {}
    while time.monotonic() < deadline:
        after = _unit_props(init, "MainPID", "NRestarts", "ActiveState", "SubState")
        restarted = after["NRestarts"] == "1" and after["MainPID"] not in ("0", hung)
        if restarted and after["ActiveState"] == "active":
            break
        time.sleep(1)
    took = time.monotonic() - stopped
    journal = _inside(init, "journalctl", "-b", "--no-pager", "-u", "cjb-appliance").stdout
    assert after.get("ActiveState") == "active" and after.get("NRestarts") == "1", (
        f"hung agent not restarted in {took:.0f} s: {after}\n{journal[-3000:]}"
    )
    assert "Watchdog timeout" in journal, journal[-3000:]
    print(f"hung agent (SIGSTOP) restarted by the watchdog, active again after {took:.1f} s")


# -- boot to provisioned, in the lab ----------------------------------------------------------
#
#   site1 (192.168.0.10) ── lan0 ┐ cjblab<run>-appliance1: the built image, booted by nspawn
#                                └ br-lan ─ cjb-vx0 ─ WireGuard ─ wan0 ══ internet ══ gateway
#
# The lab's own appliance1 agent is stopped and its links removed; the image's systemd starts
# cjb-appliance.service unchanged, which enrolls a unit personalised by `cjb image personalise`
# and imported with `cjb gateway device import` for a new tenant, and site1 gets that tenant's
# page. Only the lab's site facts (port names, the LAN prefix) and the lab gateway's CA and URL
# are bind-mounted in: a real unit gets the latter baked in by `cjb image build`.

IMAGE_TENANT = "imgt1"


def _stop_lab_appliance(state: object, ns: str, keep: set[str]) -> None:
    from cjb.lab import procs

    for p in state.processes:  # type: ignore[attr-defined]
        if p.node == "appliance1" and procs.alive(p.pid):
            os.kill(p.pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while procs.alive(p.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if procs.alive(p.pid):
                os.kill(p.pid, signal.SIGKILL)
    links = json.loads(
        subprocess.run(
            ["ip", "-n", ns, "-j", "link", "show"], capture_output=True, check=True
        ).stdout
    )
    for link in links:
        if link["ifname"] not in keep:
            subprocess.run(["ip", "-n", ns, "link", "del", link["ifname"]], capture_output=True)
    subprocess.run(["ip", "netns", "exec", ns, "nft", "flush", "ruleset"], capture_output=True)


def test_built_image_enrolls_in_the_lab_and_the_site_gets_its_page(
    built: Built, nspawn_dir: None, tmp_path: Path
) -> None:
    import sys

    from cjb.lab.control import down, up
    from cjb.lab.enrolled import GATEWAY_URL as LAB_GATEWAY_URL
    from cjb.lab.enrolled import appliance_config, gateway_state_dir
    from cjb.lab.topology import LAN_ADDRESS

    if shutil.which("systemd-nspawn") is None or shutil.which("wireguard-go") is None:
        pytest.skip("needs systemd-nspawn and wireguard-go (systemd-container, wireguard-go)")
    root = built.result.root_dir
    assert root is not None
    state = up(1, False, log=lambda _m: None, transport="wireguard")
    proc = None
    log = (tmp_path / "nspawn.log").open("w")
    try:
        ns = state.namespaces["appliance1"]
        site = state.namespaces["site1"]
        _stop_lab_appliance(state, ns, keep={"lo", "lan0", "wan0"})

        # The factory step, with the product's commands: personalise, then import.
        record = personalise(root, "CJB-IMG-LAB-1", tenant=IMAGE_TENANT, force=True)
        inventory = tmp_path / "inventory.jsonl"
        inventory.write_text(record.model_dump_json() + "\n")
        gw_state = gateway_state_dir(state.run_dir)
        subprocess.run(
            [sys.executable, "-m", "cjb.cli", "gateway", "device", "import",
             "--state-dir", str(gw_state), str(inventory)],
            check=True, capture_output=True,
        )  # fmt: skip

        # Site facts for this lab (its ports are lan0/wan0, its LAN has no DHCP server).
        site_cfg = appliance_config(state.run_dir, 1)
        site_cfg.update(root="/", state_dir="/run/cjb-appliance")
        (tmp_path / "appliance.json").write_text(json.dumps(site_cfg))
        (tmp_path / "gateway-url").write_text(LAB_GATEWAY_URL + "\n")
        ca = gw_state / "api/ca/ca.pem"
        binds = [
            f"--bind-ro={tmp_path / 'appliance.json'}:/etc/cjb/appliance.json",
            f"--bind-ro={ca}:/etc/cjb/operator-ca.pem",
            f"--bind-ro={tmp_path / 'gateway-url'}:/etc/cjb/gateway-url",
        ]
        started = time.monotonic()
        proc = subprocess.Popen(
            ["systemd-nspawn", "--boot", "-D", str(root), "--volatile=overlay", "--keep-unit",
             "--register=no", f"--network-namespace-path=/run/netns/{ns}",
             "--capability=CAP_NET_ADMIN", "--bind=/dev/net/tun", "--console=passive", *binds],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        init = labkit.container_init(proc.pid)
        page = ""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with netns(site):
                got = subprocess.run(
                    ["curl", "-s", "-m", "2", f"http://{LAN_ADDRESS.network[100]}/"],
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
            if IMAGE_TENANT in got.stdout:
                page = got.stdout
                break
            time.sleep(1)
        boot_to_page = time.monotonic() - started
        status = _inside(init, "cjb", "appliance", "status").stdout
        journal = _inside(init, "journalctl", "-b", "--no-pager", "-u", "cjb-appliance").stdout
        assert page, f"site1 never got {IMAGE_TENANT}'s page\n{status}\n{journal[-4000:]}"
        print(f"boot to tenant page through the image's tunnel: {boot_to_page:.1f} s")
        print(status)
        assert "CJB-IMG-LAB-1" in status
    finally:
        if proc is not None:
            labkit.stop_container(proc)
        log.close()
        left = down(log=lambda _m: None, only=state.run_id)
        assert not left, f"left behind: {left}"
