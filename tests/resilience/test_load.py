"""Many tenants on one gateway: 20 appliances (100 with CJB_LONG=1) enroll
over HTTPS with VXLAN inside WireGuard, then every tenant pings its service at once.

Reported:
  - `lab up`: the whole bring-up (namespaces, gateway init, personalising, agents, waits);
  - enrollment rate: appliances enrolled per second, from the first agent's start to the
    registry's last enrollment record (ARP probing, nonce, CSR and allocation included);
  - the gateway's memory: RSS of its three processes (HTTPS API, data plane, wireguard-go),
    in total and per tenant; most of it is per-process and fixed, so the per-tenant figure
    falls as tenants grow (compare the CI and the long run for the marginal cost);
  - the gateway's CPU while every tenant pings, and the pings lost.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import labkit
import pytest
from reskit import Report, scale

from cjb.common.netlink import netns
from cjb.common.wireguard.userspace import _pids_of
from cjb.lab import procs
from cjb.lab.control import down, up
from cjb.lab.enrolled import enrollment_times
from cjb.lab.state import LabState
from cjb.lab.topology import LabNames

pytestmark = [pytest.mark.root, pytest.mark.slow]
PINGS = 10
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            m = re.search(r"VmRSS:\s+(\d+) kB", f.read())
    except FileNotFoundError:
        return 0
    return int(m.group(1)) if m else 0


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(") ", 1)[1].split()


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = _stat(pid)
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime (stat fields 14, 15)
    return total / CLOCK_TICKS


def _started_wall(pid: int) -> float:
    """A process's start as wall-clock time (stat field 22 counts ticks since boot)."""
    with open("/proc/stat") as f:
        boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    return boot + int(_stat(pid)[19]) / CLOCK_TICKS


def _gateway_pids(state: LabState) -> dict[str, int]:
    found = {}
    for p in state.processes:
        if p.node == "gateway" and procs.alive(p.pid):
            found["api" if "serve" in p.argv else "dataplane"] = p.pid
    for pid in _pids_of("wireguard-go", LabNames(state.run_id).wg_ifname("gateway")):
        found["wireguard-go"] = pid
    return found


def test_many_tenants_with_traffic(report: Report) -> None:
    labkit.require("nft", "curl", "ping")
    if not os.path.isdir("/sys/module/wireguard"):
        labkit.require("wireguard-go")
    tenants = scale(20, 100)
    start = time.monotonic()
    state = up(tenants, log=lambda _m: None, transport="wireguard")
    took = time.monotonic() - start
    try:
        agents = [p.pid for p in state.processes if p.node.startswith("appliance")]
        first_agent = min(_started_wall(pid) for pid in agents)
        enrolled = enrollment_times(state.run_dir, first_agent)
        gw = _gateway_pids(state)
        cpu_before, t0 = _cpu_seconds(list(gw.values())), time.monotonic()
        pingers = {}
        for k in range(1, tenants + 1):
            with netns(state.namespaces[f"site{k}"]):
                pingers[k] = subprocess.Popen(
                    ["ping", "-n", "-c", str(PINGS), "-i", "0.2", "-W", "2", "192.168.0.100"],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                )  # fmt: skip
        received = {}
        for k, p in pingers.items():
            out, _ = p.communicate(timeout=60)
            m = re.search(r"(\d+) received", out)
            received[k] = int(m.group(1)) if m else 0
        cpu = (_cpu_seconds(list(gw.values())) - cpu_before) / (time.monotonic() - t0)
        rss = {name: _rss_kib(pid) for name, pid in gw.items()}
    finally:
        remaining = down(log=lambda _m: None, only=state.run_id)
        assert not remaining, f"left behind: {remaining}"
    silent = sorted(k for k, n in received.items() if n == 0)
    lost = sum(PINGS - n for n in received.values())
    total = sum(rss.values())
    split = ", ".join(f"{name} {kib / 1024:.0f}" for name, kib in sorted(rss.items()))
    last = max(enrolled.values(), default=0.0)
    report(
        f"tenants-{tenants}", len(received), len(received) - len(silent), len(silent),
        f"lab up {took:.0f}s; enrolled {len(enrolled)} in {last:.0f}s from first agent start"
        f" = {len(enrolled) / max(last, 1e-9):.2f}/s; gateway RSS {total / 1024:.0f} MiB "
        f"({split}) = {total / tenants / 1024:.2f} MiB/tenant; gateway CPU {100 * cpu:.0f}% "
        f"under ping; {lost}/{PINGS * tenants} pings lost",
        means="tenants whose site got ping replies from the service through its own tunnel",
    )  # fmt: skip
    assert len(enrolled) == tenants, f"{len(enrolled)} of {tenants} enrolled"
    assert not silent, f"tenants with no reply at all: {silent}"
    assert lost <= tenants, received  # a first ping may go before the neighbour resolves
