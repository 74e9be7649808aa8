"""The arm64 image on a real boot path: `qemu-system-aarch64` (TCG) with the Debian AAVMF UEFI
firmware, systemd-boot (BOOTAA64.EFI), the arm64 kernel and systemd, to a running agent.

On demand only (marker `arm64`, env CJB_TEST_ARM64=1): the arm64 build runs every maintainer
script and pip under qemu-user (6-11 min on 2 cores) and the emulated boot takes minutes more,
which does not fit CI's budget. Set CJB_TEST_ARM64_IMAGE=path/to.img to boot an image built
beforehand (`cjb image build --arch arm64`) and skip the build.

    sudo CJB_TEST_ARM64=1 .venv/bin/python -m pytest -m arm64 tests/test_image_arm64.py -s

The VM has one virtio NIC on a tap in a namespace made here that holds nothing else: no DHCP,
no gateway. "A running agent" is what the serial console shows: systemd reports the unit
started, which with `Type=notify` means the agent sent READY=1 from its loop, and the agent's
own log line names its serial. The serial console and the journal land in results/qemu-arm64/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import labkit
import pytest
import vmkit

from cjb.appliance.image.personalise import personalise

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.arm64,
    pytest.mark.skipif(
        os.environ.get("CJB_TEST_ARM64") != "1",
        reason="on demand: CJB_TEST_ARM64=1 (arm64 build under qemu-user + emulated boot)",
    ),
]

CACHE = Path("/var/cache/cjb-image")
RESULTS = Path(__file__).resolve().parent.parent / "results" / "qemu-arm64"
BOOT_TIMEOUT = 900.0  # an emulated Cortex-A on a loaded 2-core amd64 host


def _image(tmp_path: Path) -> Path:
    given = os.environ.get("CJB_TEST_ARM64_IMAGE")
    if given:
        return Path(given)
    from test_image_build import _operator_ca

    from cjb.appliance.image.build import BuildOptions, build

    result = build(
        BuildOptions(
            arch="arm64",
            out_dir=tmp_path / "dist",
            repo=labkit.snapshot_checkout(tmp_path / "snapshot"),
            operator_ca=_operator_ca(tmp_path / "ca.pem"),
            gateway_url="https://gw.lab.invalid:8443",
            cache_dir=CACHE,
        ),
        echo=print,
    )
    return result.disk_image


def test_arm64_image_boots_under_uefi_to_a_running_agent(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (taps, namespaces)")
    why = vmkit.missing_tools("arm64")
    if why:
        pytest.skip(why)
    image = _image(tmp_path)
    disk = tmp_path / "unit.img"
    subprocess.run(["cp", "--sparse=always", str(image), str(disk)], check=True)
    personalise(disk, "CJB-ARM64-0001", tenant="t1", force=True)
    # The serial port as the primary console, so systemd's unit status lines reach it.
    vmkit.add_kernel_args(disk, "console=ttyAMA0", "systemd.show_status=1")
    out = RESULTS / time.strftime("%Y%m%dT%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    ns = f"cjbarm{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    vm: vmkit.Vm | None = None
    try:
        from cjb.lab.external import open_tap

        fd = open_tap(ns, "tap0")
        vm = vmkit.Vm(disk, out, nic_fds=(fd,), arch="arm64", netns=ns)
        vm.start()
        os.close(fd)
        started = vm.wait_serial("Started cjb-appliance.service", BOOT_TIMEOUT)
        serial = vm.serial()
        took = time.monotonic() - vm.started
        assert started, f"no running agent after {took:.0f} s:\n{serial[-3000:]}\n(see {out})"
        print(f"arm64: power-on to cjb-appliance.service started: {took:.1f} s")
    finally:
        if vm is not None:
            vm.stop(timeout=120)
            journal = vm.journal()
            (out / "agent.txt").write_text(
                "\n".join(line for line in journal.splitlines() if "cjb" in line)
            )
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert "CJB-ARM64-0001" in journal, "the agent's start line (with its serial) is missing"
    assert shutil.which("journalctl")  # the journal above was read with it
