"""Many tenants on one gateway (issue 8, item 6): 20 appliances (100 with CJB_LONG=1) enroll
over HTTPS with VXLAN inside WireGuard, then every tenant pings its service at once.
Reported: the lab's enrollment rate (appliances enrolled per second of `lab up`, which also
builds the namespaces: a lower bound), and the gateway's memory per tenant (RSS of the API,
the data plane and its wireguard-go, divided by the tenants)."""

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
from cjb.lab.topology import LabNames

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        m = re.search(r"VmRSS:\s+(\d+) kB", f.read())
    return int(m.group(1)) if m else 0


def test_many_tenants_with_traffic(report: Report) -> None:
    labkit.require("nft", "curl", "ping")
    if not os.path.isdir("/sys/module/wireguard"):
        labkit.require("wireguard-go")
    tenants = scale(20, 100)
    start = time.monotonic()
    state = up(tenants, log=lambda _m: None, transport="wireguard")
    took = time.monotonic() - start
    try:
        pingers = {}
        for k in range(1, tenants + 1):
            with netns(state.namespaces[f"site{k}"]):
                pingers[k] = subprocess.Popen(
                    ["ping", "-n", "-c", "10", "-i", "0.2", "-W", "2", "192.168.0.100"],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                )  # fmt: skip
        received = {}
        for k, p in pingers.items():
            out, _ = p.communicate(timeout=60)
            m = re.search(r"(\d+) received", out)
            received[k] = int(m.group(1)) if m else 0
        gw = [p.pid for p in state.processes if p.node == "gateway" and procs.alive(p.pid)]
        gw += _pids_of("wireguard-go", LabNames(state.run_id).wg_ifname("gateway"))
        rss = sum(_rss_kib(pid) for pid in gw)
    finally:
        remaining = down(log=lambda _m: None, only=state.run_id)
        assert not remaining, f"left behind: {remaining}"
    silent = sorted(k for k, n in received.items() if n == 0)
    assert not silent, f"tenants with no reply at all: {silent}"
    lost = sum(10 - n for n in received.values())
    assert lost <= tenants, received  # a first ping may go before the neighbour resolves
    report(
        f"tenants-{tenants}", tenants, tenants - len(silent), len(silent),
        f"lab up (enrollment) {took:.0f}s = {tenants / took:.2f} appliances/s; gateway RSS "
        f"{rss / 1024:.0f} MiB = {rss / tenants / 1024:.1f} MiB/tenant; "
        f"{lost}/{10 * tenants} pings lost",
    )  # fmt: skip
