"""Boot a raw appliance image under QEMU (TCG: KVM does not run guests here, docs/platform.md)
with its NICs on tap file descriptors, and get its serial console and journal out.

The VM never gets QEMU's user-mode network: its only NICs are the taps the caller opened in
lab namespaces (lab/external.py). Shut down with ACPI (QMP `system_powerdown`) so the guest
flushes its journal to the disk image, which `journal()` then reads with debugfs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cjb.appliance.image.disk import SECTOR, read_partitions, root_offset
from cjb.common.netlink import netns

# No PXE option ROM on the NICs (romfile=): the firmware goes straight to the disk.
OVMF = Path("/usr/share/ovmf/OVMF.fd")
AAVMF = Path("/usr/share/qemu-efi-aarch64/QEMU_EFI.fd")  # Debian qemu-efi-aarch64
WAN_MAC = "52:54:00:cb:00:01"
LAN_MAC = "52:54:00:cb:00:02"


def missing_tools(arch: str = "amd64") -> str | None:
    """Why this machine cannot boot the image, or None."""
    if arch == "amd64":
        if shutil.which("qemu-system-x86_64") is None or not OVMF.is_file():
            return (
                "needs qemu-system-x86_64 and OVMF: apt-get install -y "
                "--no-install-recommends qemu-system-x86 ovmf"
            )
    elif shutil.which("qemu-system-aarch64") is None or not AAVMF.is_file():
        return (
            "needs qemu-system-aarch64 and AAVMF: apt-get install -y "
            "--no-install-recommends qemu-system-arm qemu-efi-aarch64"
        )
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun for the VM's taps"
    return None


def esp_image(disk: Path) -> str:
    """mtools' name for the ESP of a raw disk image (file@@offset)."""
    esp = read_partitions(disk)[0]
    return f"{disk}@@{int(str(esp['start'])) * SECTOR}"


def add_kernel_args(disk: Path, *args: str) -> None:
    """Append `args` to the boot entry's command line in this copy of the disk only.

    The tests add `no_timer_check`: under TCG on a loaded 2-core host the kernel's IO-APIC
    timer check can miss its window and panic ("IO-APIC + timer doesn't work!"), a property
    of the emulator's speed, not of the image (KVM guests get the same option by default)."""
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    at = esp_image(disk)
    entry = "::/loader/entries/cjb.conf"
    text = subprocess.run(
        ["mtype", "-i", at, entry], capture_output=True, text=True, env=env, check=True
    ).stdout
    lines = [
        line + " " + " ".join(args) if line.startswith("options ") else line
        for line in text.splitlines()
    ]
    subprocess.run(
        ["mcopy", "-o", "-i", at, "-", entry],
        input="\n".join(lines) + "\n",
        text=True,
        env=env,
        check=True,
        capture_output=True,
    )


@dataclass
class Vm:
    disk: Path
    out_dir: Path  # serial.log, qemu.log, journal.txt land here
    nic_fds: tuple[int, ...] = ()  # tap fds, first = WAN, second = LAN
    arch: str = "amd64"
    # Run QEMU in this namespace (it needs none: its NICs are fds), so that `cjb lab down`,
    # which kills every process in the run's namespaces, also ends a VM a crashed test left.
    netns: str | None = None
    memory_mib: int = 1024
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    _qmp_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self._qmp_path = self.out_dir / "qmp.sock"

    @property
    def serial_log(self) -> Path:
        return self.out_dir / "serial.log"

    def argv(self) -> list[str]:
        macs = (WAN_MAC, LAN_MAC)
        nics: list[str] = []
        for i, fd in enumerate(self.nic_fds):
            nics += [
                "-netdev", f"tap,id=n{i},fd={fd}",
                "-device", f"virtio-net-pci,netdev=n{i},mac={macs[i]},romfile=",
            ]  # fmt: skip
        if not nics:
            nics = ["-nic", "none"]
        if self.arch == "amd64":
            machine = ["qemu-system-x86_64", "-machine", "q35", "-cpu", "max",
                       "-bios", str(OVMF)]  # fmt: skip
        else:
            # cortex-a72, not "max": emulating pointer authentication costs TCG dearly.
            machine = ["qemu-system-aarch64", "-machine", "virt", "-cpu", "cortex-a72",
                       "-bios", str(AAVMF)]  # fmt: skip
        return [
            *machine,
            "-accel", "tcg,thread=multi",
            "-smp", "2",
            "-m", str(self.memory_mib),
            "-drive", f"file={self.disk},format=raw,if=virtio",
            *nics,
            "-serial", f"file:{self.serial_log}",
            "-display", "none",
            "-monitor", "none",
            "-qmp", f"unix:{self._qmp_path},server=on,wait=off",
        ]  # fmt: skip

    def start(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        log = (self.out_dir / "qemu.log").open("wb")
        self.started = time.monotonic()
        with netns(self.netns):
            self.proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=self.nic_fds,
                start_new_session=True,
            )
        log.close()

    def serial(self) -> str:
        try:
            return self.serial_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def check_alive(self) -> None:
        """Raise at once when QEMU exited or the guest kernel panicked."""
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"QEMU exited ({self.proc.returncode}); see {self.out_dir}")
        serial = self.serial()
        if "Kernel panic" in serial:
            raise AssertionError(f"guest kernel panic:\n{serial[-2000:]}")

    def wait_serial(self, needle: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.serial():
                return True
            if self.proc is not None and self.proc.poll() is not None:
                return False
            time.sleep(1)
        return False

    def _qmp(self, command: str) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self._qmp_path))
            s.recv(4096)  # greeting
            for cmd in ("qmp_capabilities", command):
                s.sendall(json.dumps({"execute": cmd}).encode() + b"\n")
                s.recv(4096)

    def stop(self, timeout: float = 60) -> None:
        """ACPI power-off (the guest syncs its disks), then kill after `timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if "Kernel panic" in self.serial():
            timeout = 0  # nobody left to answer the power button
        try:
            self._qmp("system_powerdown")
            self.proc.wait(timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()

    def journal(self) -> str:
        """The guest's persistent journal, read from the (stopped) disk image."""
        dump = self.out_dir / "journal-files"
        shutil.rmtree(dump, ignore_errors=True)
        dump.mkdir()
        device = f"{self.disk}?offset={root_offset(self.disk)}"
        subprocess.run(
            ["debugfs", "-R", f"rdump /var/log/journal {dump}", device],
            capture_output=True,
            check=False,
        )
        out = subprocess.run(
            ["journalctl", "--no-pager", "-o", "short-monotonic", "-D", str(dump / "journal")],
            capture_output=True,
            text=True,
            check=False,
        )
        text = out.stdout or out.stderr
        (self.out_dir / "journal.txt").write_text(text)
        return text
