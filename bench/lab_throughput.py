"""TCP throughput LAN client -> service host through the lab, with the plain limit beside it.

Paths, measured in the same run (numbers are only comparable within one run):
  plain      veth -> bridge -> veth between two namespaces (the kernel's limit here)
  native     site1 -> appliance bridge -> VXLAN -> gateway worker (IPv6 frames as is) -> service
  translated site1 (IPv4) -> ... -> gateway worker + translator (fe80::/96) -> service
With --transport wireguard|both the same two paths are measured through an enrolled lab
(VXLAN inside WireGuard), plus the WireGuard overlay alone (appliance -> gateway overlay
address, no VXLAN, no worker): the tunnel's own limit.

Reproduce (root, Debian packages iperf3 nftables curl wireguard-go):
    python bench/lab_throughput.py                       # both labs, 5 s per path
    python bench/lab_throughput.py --transport vxlan     # only the plain VXLAN lab
    python bench/lab_throughput.py --seconds 10 --json
It builds its own 1-tenant lab(s) and its own two bench namespaces, and removes them.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import sys

from iperf_run import iperf_json, received_mbits

from cjb.common.netlink import Bridge, Link, Namespace, NetworkSpec, Veth, VethPeer, apply
from cjb.common.netlink import remove as remove_spec
from cjb.common.netlink.real import RealKernel
from cjb.lab.control import down, native_link_local, up
from cjb.lab.topology import SERVICE_IPV4


def plain_spec(run_id: str) -> NetworkSpec:
    prefix = f"cjbbench{run_id}-"
    a, br, b = prefix + "a", prefix + "br", prefix + "b"
    return NetworkSpec(
        "bench",
        (
            Namespace(
                a,
                (
                    Link(
                        "eth0", Veth("pa", br), addresses=(ipaddress.ip_interface("10.99.0.1/24"),)
                    ),
                ),
                owned=True,
            ),
            Namespace(
                br,
                (
                    Link("br0", Bridge()),
                    Link("pa", VethPeer("eth0"), master="br0"),
                    Link("pb", VethPeer("eth0"), master="br0"),
                ),
                owned=True,
            ),
            Namespace(
                b,
                (
                    Link(
                        "eth0", Veth("pb", br), addresses=(ipaddress.ip_interface("10.99.0.2/24"),)
                    ),
                ),
                owned=True,
            ),
        ),
        namespace_prefix=prefix,
    )


def iperf(client_ns: str, server_ns: str, target: str, seconds: int) -> float:
    """One TCP stream for `seconds`; returns Mbit/s as the receiver counted it."""
    return received_mbits(iperf_json(client_ns, server_ns, target, seconds))


def measure_lab(
    transport: str, seconds: int, results: dict[str, float], failed: dict[str, str]
) -> None:
    """The lab's paths for one transport; a path that fails is reported, not fatal."""
    label = "vxlan" if transport == "vxlan" else "wg+vxlan"
    state = up(1, log=lambda _m: None, transport=transport)
    try:
        site, service = state.namespaces["site1"], state.namespaces["service"]
        paths: list[tuple[str, str, str, str]] = []
        if transport == "wireguard":
            overlay = "fd63:6a62:77::1"  # the gateway's overlay address (settings default)
            paths.append(
                (
                    "wireguard overlay only",
                    state.namespaces["appliance1"],
                    state.namespaces["gateway"],
                    overlay,
                )
            )
        ll = native_link_local(state, 1)
        paths.append((f"{label} native IPv6 (worker)", site, service, f"{ll}%eth0"))
        paths.append((f"{label} translated (worker+xlat)", site, service, str(SERVICE_IPV4)))
        for name, client, server, target in paths:
            try:
                results[name] = iperf(client, server, target, seconds)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                failed[name] = str(exc)[:200]
    finally:
        down(log=lambda _m: None, only=state.run_id)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--transport",
        choices=["vxlan", "wireguard", "both"],
        default="both",
        help="which lab to measure: plain VXLAN, enrolled WireGuard, both",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    if shutil.which("iperf3") is None:
        print("iperf3 missing: apt-get install -y --no-install-recommends iperf3", file=sys.stderr)
        return 2
    run_id = secrets.token_hex(2)
    spec = plain_spec(run_id)
    results: dict[str, float] = {}
    failed: dict[str, str] = {}
    transports = ["vxlan", "wireguard"] if args.transport == "both" else [args.transport]
    try:
        with RealKernel() as kernel:
            apply(kernel, spec)
        a, b = spec.namespaces[0].name, spec.namespaces[2].name
        assert a is not None and b is not None
        results["plain veth+bridge"] = iperf(a, b, "10.99.0.2", args.seconds)
        for transport in transports:
            measure_lab(transport, args.seconds, results, failed)
    finally:
        with RealKernel() as kernel:
            remove_spec(kernel, spec)
    limit = results["plain veth+bridge"]
    if args.json:
        print(
            json.dumps(
                {
                    "mbit_per_s": results,
                    "ratio_to_plain": {k: v / limit for k, v in results.items()},
                    "failed": failed,
                },
                indent=2,
            )
        )
    else:
        print(f"{'path':36} {'Mbit/s':>10} {'vs plain':>9}")
        for name, mbit in results.items():
            print(f"{name:36} {mbit:10.1f} {mbit / limit:9.3f}")
        for name, why in failed.items():
            print(f"{name:36} {'FAILED':>10}  {why}")
        for label in ("vxlan", "wg+vxlan"):
            tr = results.get(f"{label} translated (worker+xlat)")
            nat = results.get(f"{label} native IPv6 (worker)")
            if tr and nat:
                print(f"{label}: translated / native: {tr / nat:.3f}")
        wg_tr, vx_tr = (
            results.get("wg+vxlan translated (worker+xlat)"),
            results.get("vxlan translated (worker+xlat)"),
        )
        if wg_tr and vx_tr:
            print(f"translated: wireguard / plain vxlan: {wg_tr / vx_tr:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
