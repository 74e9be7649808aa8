"""The personalised raw image on a real boot path: UEFI firmware (OVMF), systemd-boot, the
Debian kernel and initrd, udev-named virtio NICs, systemd-networkd; then enrollment with the
lab's gateway and a LAN client's page through the tunnel (slow, root).

    xlan 192.168.0.10 ══ tap-lan ══ NIC 2 ┐ QEMU (TCG): the image  ┌ NIC 1 ══ tap-wan ══ xrouter
                                          └ br-lan (networkd)      ┘     dnsmasq: DHCPv4 + RA
                                                                              │
                                            gateway ══ internet ══════════════┘

The image is built with the lab gateway's CA and URL baked in (`cjb image build`), then
personalised (`cjb image personalise`) and imported (`cjb gateway device import`): nothing
is bind-mounted or configured by hand. The serial console (always) and the guest journal (on
failure, read from the powered-off disk with debugfs) are kept in results/qemu-boot/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import labkit
import pytest
import vmkit

from cjb.appliance.image.build import BuildOptions, build
from cjb.appliance.image.personalise import personalise
from cjb.common.netlink import netns
from cjb.gateway.control.statedir import StateDir

pytestmark = [pytest.mark.slow, pytest.mark.root]

CACHE = Path("/var/cache/cjb-image")
RESULTS = Path(__file__).resolve().parent.parent / "results" / "qemu-boot"
TENANT = "vmt1"
SERIAL = "CJB-VM-0001"
BOOT_TIMEOUT = 240.0  # TCG on 2 shared cores: boot ~30-60 s, Python start, RFC 5227 probing


def _require() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: namespaces, taps, mmdebstrap")
    why = vmkit.missing_tools()
    if why:
        pytest.skip(why)
    for tool in ("mmdebstrap", "debugfs", "dnsmasq", "curl"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (tools/debian-packages.txt)")


def _curl(ns: str, url: str) -> str:
    with netns(ns):
        got = subprocess.run(
            ["curl", "-s", "-m", "3", url], capture_output=True, text=True, check=False
        )
    return got.stdout


def test_image_boots_under_uefi_enrolls_and_serves_its_lan(tmp_path: Path) -> None:
    _require()
    from cjb.lab.control import down, up
    from cjb.lab.enrolled import GATEWAY_URL, gateway_state_dir, import_inventory
    from cjb.lab.external import CUSTOMER_LAN, add_external_site
    from cjb.lab.topology import SERVICE_IPV4, LabNames, underlay_net

    out = RESULTS / time.strftime("%Y%m%dT%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    state = up(1, False, log=lambda _m: None, transport="wireguard")
    vm: vmkit.Vm | None = None
    journal = ""
    passed = False
    try:
        gw_state = gateway_state_dir(state.run_dir)
        # The operator's build, with this gateway's CA and URL baked in.
        t0 = time.monotonic()
        result = build(
            BuildOptions(
                out_dir=tmp_path / "dist",
                repo=labkit.snapshot_checkout(tmp_path / "snapshot"),
                operator_ca=StateDir(gw_state).ca_cert,
                gateway_url=GATEWAY_URL,
                cache_dir=CACHE,
            ),
            echo=lambda _l: None,
        )
        print(f"image build: {time.monotonic() - t0:.1f} s")
        disk = tmp_path / "unit.img"
        subprocess.run(["cp", "--sparse=always", str(result.disk_image), str(disk)], check=True)
        vmkit.add_kernel_args(disk, "no_timer_check")
        record = personalise(disk, SERIAL, tenant=TENANT)
        import_inventory(state.run_dir, [record])

        site = add_external_site(state)
        vm = vmkit.Vm(disk, out, nic_fds=(site.wan_fd, site.lan_fd), netns=site.router_ns)
        vm.start()
        site.close()  # QEMU holds the taps now
        page = ""
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline and not page:
            vm.check_alive()
            got = _curl(site.lan_ns, f"http://{SERVICE_IPV4}/")
            page = got if TENANT in got else ""
            time.sleep(2)
        took = time.monotonic() - vm.started
        serial = vm.serial()
        assert page, (
            f"the LAN client never got {TENANT}'s page in {BOOT_TIMEOUT:.0f} s; serial "
            f"console tail:\n{serial[-3000:]}\n(logs in {out})"
        )
        print(f"power-on to the tenant's page through the tunnel: {took:.1f} s")
        # The real boot path ran: UEFI firmware -> systemd-boot -> kernel -> systemd's getty.
        assert "BdsDxe: starting" in serial and "cjb-appliance login:" in serial, serial[-2000:]
        # The tunnel runs over the SLAAC address from the customer router's RA.
        endpoints = subprocess.run(
            ["wg", "show", LabNames(state.run_id).wg_ifname("gateway"), "endpoints"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        slaac = str(underlay_net(CUSTOMER_LAN).network_address).rstrip(":")
        assert f"[{slaac}:" in endpoints, endpoints
        # The gateway saw this unit enroll (from its customer router's SLAAC address).
        listing = subprocess.run(
            [sys.executable, "-m", "cjb.cli", "gateway", "device", "list",
             "--state-dir", str(gw_state)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        line = next(ln for ln in listing.splitlines() if SERIAL in ln)
        assert "enrolled" in line and TENANT in line, listing
        leases = (state.run_dir / "xrouter-dnsmasq.leases").read_text()
        assert " 192.168.0." in leases, f"no DHCPv4 lease from the customer router: {leases!r}"
        passed = True
    finally:
        if vm is not None:
            vm.stop()
            journal = vm.journal()  # kept in `out` either way
            if not passed:
                print(f"guest journal ({out / 'journal.txt'}):\n{journal[-6000:]}")
        dnsmasq_log = state.run_dir / "logs" / "xrouter-dnsmasq.log"
        if dnsmasq_log.exists():
            shutil.copy(dnsmasq_log, out / "dnsmasq.log")
        left = down(log=lambda _m: None, only=state.run_id)
        assert not left, f"left behind: {left}"
    # From the guest's own journal: systemd drives the board's hardware watchdog (q35's
    # iTCO), and the agent's unit became active only on its READY=1 (Type=notify).
    assert "Watchdog running with a hardware timeout of 30s" in journal, journal[-3000:]
    assert "Started cjb-appliance.service" in journal
