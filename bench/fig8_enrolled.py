"""Fig. 8's enrolled transport: one tenant through VXLAN inside WireGuard (the lab's default,
what a user runs), with the WireGuard overlay alone measured in the same run as the limit,
and where the CPU goes while each path runs.

Paths, on one enrolled 1-tenant lab (`cjb lab up --transport wireguard`):
  overlay             appliance -> gateway overlay address: wireguard-go both ends, no VXLAN,
                      no translator (the tunnel's own limit on this machine)
  kernel-translated   site (IPv4) -> appliance bridge -> VXLAN -> WireGuard -> gateway
                      tc-eBPF fast path (fe80::/96) -> service host
  kernel-native       the same with the LAN client's native IPv6, redirected by tc
  userspace-*         the same two with `fast_path: userspace` (the Python worker)

Run via fig8.py (root; Debian packages iperf3 wireguard-go clang libbpf-dev):
    python bench/fig8.py --transport enrolled            # 3 runs per path, 5 s each
    python bench/fig8.py --transport enrolled --quick    # 1 run, 3 s
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from iperf_run import client_argv, concurrent_mbits, start_server

from cjb.gateway.dataplane.config import read_model, write_model
from cjb.gateway.dataplane.io_mode import set_fast_path
from cjb.lab.control import down, native_link_local, up
from cjb.lab.state import LabState
from cjb.lab.topology import SERVICE_IPV4, LabNames

OVERLAY = "fd63:6a62:77::1"  # the gateway's overlay address (lab settings default)
PORT = 5301
PATHS = ("overlay", "kernel-translated", "kernel-native", "userspace-translated",
         "userspace-native")  # fmt: skip
TICKS = os.sysconf("SC_CLK_TCK")


def _ns_inode(ns: str) -> int:
    return os.stat(f"/run/netns/{ns}").st_ino


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def _machine_busy() -> float:
    """CPU seconds all cores spent not idle (softirq included: VXLAN, veth, tc)."""
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in cpu]
    return (sum(values[:8]) - values[3] - values[4]) / TICKS  # minus idle, iowait


def _link_stats(ns: str, ifname: str) -> tuple[int, int, int, int]:
    """rx bytes, rx packets, tx bytes, tx packets of a link in a namespace."""
    out = subprocess.run(["ip", "-n", ns, "-j", "-s", "link", "show", "dev", ifname],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    s = json.loads(out)[0]["stats64"]
    return s["rx"]["bytes"], s["rx"]["packets"], s["tx"]["bytes"], s["tx"]["packets"]


def tun_sizes(before: dict[str, tuple[int, ...]], after: dict[str, tuple[int, ...]]) -> str:
    """Mean bytes per packet across each WireGuard TUN device (the upload direction): what
    the appliance's kernel hands its wireguard-go, what the gateway's wireguard-go hands
    its kernel. 64 KB: GSO super-packets cross; ~1400: one wire packet per syscall."""
    parts = []
    for key, (b_i, p_i) in (("appliance1", (2, 3)), ("gateway", (0, 1))):
        nbytes = after[key][b_i] - before[key][b_i]
        packets = after[key][p_i] - before[key][p_i]
        parts.append(f"{key} {nbytes / max(packets, 1):.0f} B/pkt")
    return ", ".join(parts)


def lab_processes(state: LabState) -> dict[str, list[int]]:
    """The lab's gateway daemon, appliance agent and each side's wireguard-go, by role."""
    roles: dict[str, list[int]] = {}
    for p in state.processes:
        if p.node == "gateway" and "run" in p.argv and "gateway" in p.argv:
            roles.setdefault("gateway daemon (worker)", []).append(p.pid)
        if p.node == "appliance1" and "appliance" in p.argv:
            roles.setdefault("appliance agent", []).append(p.pid)
    where = {_ns_inode(state.namespaces[n]): n for n in ("gateway", "appliance1")}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            comm = Path(f"/proc/{entry}/comm").read_text().strip()
            ino = os.stat(f"/proc/{entry}/ns/net").st_ino
        except OSError:
            continue
        if comm.startswith("wireguard-go") and ino in where:
            roles.setdefault(f"wireguard-go ({where[ino]})", []).append(int(entry))
    return roles


def _measure(
    client_ns: str,
    server_ns: str,
    target: str,
    seconds: int,
    roles: dict[str, list[int]],
    tuns: dict[str, tuple[str, str]],
) -> tuple[float, dict[str, float], str]:
    """Mbit/s of one TCP flow, CPU % (of one core) per role and for the machine, and the
    mean packet size across the WireGuard TUN devices."""
    server = start_server(server_ns, PORT)
    try:
        time.sleep(0.5)
        links = {k: _link_stats(ns, ifname) for k, (ns, ifname) in tuns.items()}
        before = {r: sum(_cpu(p) for p in pids) for r, pids in roles.items()}
        busy, t0 = _machine_busy(), time.monotonic()
        argv = client_argv(target, seconds, port=PORT, omit=1)
        mbits = concurrent_mbits([(client_ns, argv)], seconds)[0]
        wall = time.monotonic() - t0
        cpu = {
            r: 100 * (sum(_cpu(p) for p in pids) - before[r]) / wall for r, pids in roles.items()
        }
        cpu["machine (all cores)"] = 100 * (_machine_busy() - busy) / wall
        sizes = tun_sizes(links, {k: _link_stats(ns, i) for k, (ns, i) in tuns.items()})
    finally:
        server.kill()
        server.wait()
    return mbits, cpu, sizes


def open_bench_port(config: Path) -> None:
    """The gateway host's input policy drops TCP but for its listed ports: list iperf3's
    (through the config, as an operator would), so the overlay-alone flow can reach it."""
    model = read_model(config)
    ports = (*model.host_input.tcp_ports, PORT)
    host_input = model.host_input.model_copy(update={"tcp_ports": ports})
    write_model(config, model.model_copy(update={"host_input": host_input}))
    time.sleep(2.0)  # the data plane reloads the file within a second


def run_enrolled(runs: int, seconds: int, log: Callable[[str], None] = print) -> int:
    state = up(1, log=lambda _m: None, transport="wireguard")
    results: dict[str, list[float]] = {p: [] for p in PATHS}
    cpu: dict[str, dict[str, list[float]]] = {p: {} for p in PATHS}
    try:
        site, service = state.namespaces["site1"], state.namespaces["service"]
        gateway, appliance = state.namespaces["gateway"], state.namespaces["appliance1"]
        config = state.run_dir / "gateway.json"
        open_bench_port(config)
        roles = lab_processes(state)
        names = LabNames(state.run_id)
        tuns = {n: (state.namespaces[n], names.wg_ifname(n)) for n in ("appliance1", "gateway")}
        log(f"fig8 enrolled: lab {state.run_id}, processes {roles}")
        for mode in ("kernel", "userspace"):
            set_fast_path(config, mode, timeout=60)
            time.sleep(1.0)
            native = f"{native_link_local(state, 1)}%eth0"
            for r in range(runs):
                todo = [(f"{mode}-translated", site, service, str(SERVICE_IPV4)),
                        (f"{mode}-native", site, service, native)]  # fmt: skip
                if mode == "kernel":  # the limit, between the same runs
                    todo.insert(0, ("overlay", appliance, gateway, OVERLAY))
                for path, client, server, target in todo:
                    mbits, used, sizes = _measure(client, server, target, seconds, roles, tuns)
                    results[path].append(mbits)
                    for role, pct in used.items():
                        cpu[path].setdefault(role, []).append(pct)
                    log(f"  {path} run {r}: {mbits:.0f} Mbit/s; across the TUNs: {sizes}")
    finally:
        set_fast_path(state.run_dir / "gateway.json", "kernel", timeout=30)
        down(log=lambda _m: None, only=state.run_id)
    print_table(results, cpu, runs, seconds, log)
    return 0


def _stat(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values) if values else 0.0
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def print_table(
    results: dict[str, list[float]],
    cpu: dict[str, dict[str, list[float]]],
    runs: int,
    seconds: int,
    log: Callable[[str], None] = print,
) -> None:
    overlay = _stat(results["overlay"])[0] or float("nan")
    log(f"\nenrolled transport (VXLAN inside WireGuard), 1 tenant, {runs} x {seconds} s, one run")
    log(f"{'path':22} {'Mbit/s':>16} {'/overlay':>9}")
    for path in PATHS:
        mean, sd = _stat(results[path])
        log(f"{path:22} {mean:9.0f} ± {sd:4.0f} {mean / overlay:9.3f}")
    for mode in ("kernel", "userspace"):
        tr, nat = _stat(results[f"{mode}-translated"])[0], _stat(results[f"{mode}-native"])[0]
        log(f"{mode}: translated/overlay {tr / overlay:.3f}, native/overlay {nat / overlay:.3f}")
    log("\nCPU while each path ran (% of one core, mean over runs; 2 cores = 200 %):")
    roles = sorted({r for per in cpu.values() for r in per})
    log(f"{'path':22} " + " ".join(f"{r[:24]:>24}" for r in roles))
    for path in PATHS:
        row = [_stat(cpu[path].get(r, []))[0] for r in roles]
        log(f"{path:22} " + " ".join(f"{v:24.0f}" for v in row))
