"""The userspace translating path in each IO mode, with the plain veth limit, in one run.

Paths (all in the same run; numbers from a shared machine are noisy, compare ratios):
  plain veth           two namespaces, one veth: the kernel's limit here
  <mode> translated    site1 (IPv4) -> appliance -> VXLAN -> gateway worker + translator
                       (fe80::/96) -> service host, for userspace_io = packet, packet-vnet
  <mode> translated -R the same, service host -> site1 (bulk TO_LAN)
  <mode> native        site1 -> ... -> worker (IPv6 as is) -> service host's native link
Each path: one TCP stream (Mbit/s, and wire frames/s at MSS-size frames) and a small-frame
UDP flood (iperf3 -u -l 64 -b 0: frames/s received, loss). The gateway's GSO counters show
how many segments one super-frame carried on average.

Reproduce (root; Debian packages iperf3 nftables curl):
    python bench/userspace_path.py                 # 5 s per measurement
    python bench/userspace_path.py --seconds 10 --json
It builds its own 1-tenant lab and its own plain namespaces, and removes both.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import shutil
import sys
from pathlib import Path

from iperf_run import iperf_json

from cjb.common.netlink import Link, Namespace, NetworkSpec, Veth, VethPeer, apply
from cjb.common.netlink import remove as remove_spec
from cjb.common.netlink.real import RealKernel
from cjb.gateway.dataplane.io_mode import set_userspace_io
from cjb.lab.control import down, native_link_local, up
from cjb.lab.topology import SERVICE_IPV4

MODES = ("packet", "packet-vnet")
WIRE_FRAME = 1514  # an MSS-size TCP segment on Ethernet, for frames/s of TCP


def plain_spec(run_id: str) -> NetworkSpec:
    prefix = f"cjbusp{run_id}-"
    a, b = prefix + "a", prefix + "b"
    return NetworkSpec(
        "bench",
        (
            Namespace(
                a,
                (
                    Link(
                        "eth0",
                        Veth("eth0", b),
                        addresses=(ipaddress.ip_interface("10.98.0.1/24"),),
                    ),
                ),
                owned=True,
            ),
            Namespace(
                b,
                (
                    Link(
                        "eth0",
                        VethPeer("eth0"),
                        addresses=(ipaddress.ip_interface("10.98.0.2/24"),),
                    ),
                ),
                owned=True,
            ),
        ),
        namespace_prefix=prefix,
    )


iperf = iperf_json


def tcp(
    client_ns: str, server_ns: str, target: str, seconds: int, reverse: bool = False
) -> dict[str, float]:
    r = iperf(client_ns, server_ns, target, seconds, *(["-R"] if reverse else []))
    bps = float(r["end"]["sum_received"]["bits_per_second"])
    return {"mbit_s": bps / 1e6, "frames_s": bps / 8 / WIRE_FRAME}


def small_udp(client_ns: str, server_ns: str, target: str, seconds: int) -> dict[str, float]:
    r = iperf(client_ns, server_ns, target, seconds, "-u", "-l", "64", "-b", "0")
    s = r["end"]["sum"]
    received = s["packets"] - s["lost_packets"]
    return {"frames_s": received / s["seconds"], "loss_pct": float(s["lost_percent"])}


def gso_counters(run_dir: Path) -> dict[str, int]:
    status = json.loads((run_dir / "gateway" / "status.json").read_text())
    gso = status["tenants"]["tenant1"].get("gso") or {}
    return {
        "superframes": sum(gso.get("superframes", {}).values()),
        "segments": sum(gso.get("segments", {}).values()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    if shutil.which("iperf3") is None:
        print("iperf3 missing: apt-get install -y --no-install-recommends iperf3", file=sys.stderr)
        return 2
    s = args.seconds
    spec = plain_spec(secrets.token_hex(2))
    tcp_res: dict[str, dict[str, float]] = {}
    udp_res: dict[str, dict[str, float]] = {}
    per_superframe: dict[str, float] = {}
    state = up(1, log=lambda _m: None)
    try:
        with RealKernel() as kernel:
            apply(kernel, spec)
        a, b = spec.namespaces[0].name, spec.namespaces[1].name
        assert a is not None and b is not None
        tcp_res["plain veth"] = tcp(a, b, "10.98.0.2", s)
        udp_res["plain veth"] = small_udp(a, b, "10.98.0.2", s)
        site, service = state.namespaces["site1"], state.namespaces["service"]
        ll = f"{native_link_local(state, 1)}%eth0"
        config = state.run_dir / "gateway.json"
        for mode in MODES:
            set_userspace_io(config, mode)
            before = gso_counters(state.run_dir)
            tcp_res[f"{mode} translated"] = tcp(site, service, str(SERVICE_IPV4), s)
            tcp_res[f"{mode} translated -R"] = tcp(site, service, str(SERVICE_IPV4), s, True)
            after = gso_counters(state.run_dir)
            frames = after["superframes"] - before["superframes"]
            if frames:
                per_superframe[mode] = (after["segments"] - before["segments"]) / frames
            tcp_res[f"{mode} native"] = tcp(site, service, ll, s)
            udp_res[f"{mode} translated"] = small_udp(site, service, str(SERVICE_IPV4), s)
    finally:
        with RealKernel() as kernel:
            remove_spec(kernel, spec)
        down(log=lambda _m: None, only=state.run_id)
    limit_tcp = tcp_res["plain veth"]["mbit_s"]
    limit_udp = udp_res["plain veth"]["frames_s"]
    if args.json:
        print(
            json.dumps(
                {"tcp": tcp_res, "udp_64": udp_res, "segments_per_superframe": per_superframe},
                indent=2,
            )
        )
        return 0
    print(f"one TCP stream, {s} s each (noisy shared machine: compare ratios)")
    print(f"{'path':28} {'Mbit/s':>9} {'frames/s':>10} {'vs plain':>9}")
    for name, r in tcp_res.items():
        print(f"{name:28} {r['mbit_s']:9.1f} {r['frames_s']:10.0f} {r['mbit_s'] / limit_tcp:9.3f}")
    print(f"\nUDP, 64-byte payloads, iperf3 -b 0, {s} s each")
    print(f"{'path':28} {'frames/s':>10} {'loss %':>7} {'vs plain':>9}")
    for name, r in udp_res.items():
        print(
            f"{name:28} {r['frames_s']:10.0f} {r['loss_pct']:7.1f} {r['frames_s'] / limit_udp:9.3f}"
        )
    base, fast = tcp_res["packet translated"]["mbit_s"], tcp_res["packet-vnet translated"]["mbit_s"]
    print(f"\npacket-vnet / packet, translated TCP: {fast / base:.2f}x")
    for mode, n in per_superframe.items():
        print(f"{mode}: {n:.1f} segments per super-frame on average")
    return 0


if __name__ == "__main__":
    sys.exit(main())
