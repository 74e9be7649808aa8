"""TCP throughput LAN client -> service host through the lab, with the plain limit beside it.

Paths, measured in the same run (numbers are only comparable within one run):
  plain      veth -> bridge -> veth between two namespaces (the kernel's limit here)
  native     site1 -> appliance bridge -> VXLAN -> gateway worker (IPv6 frames as is) -> service
  translated site1 (IPv4) -> ... -> gateway worker + translator (fe80::/96) -> service

Reproduce (root, Debian packages iperf3 nftables curl):
    python bench/lab_throughput.py            # 5 s per path
    python bench/lab_throughput.py --seconds 10 --json
It builds its own 1-tenant lab and its own two bench namespaces, and removes both.
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
import time

from cjb.common.netlink import Bridge, Link, Namespace, NetworkSpec, Veth, VethPeer, apply, netns
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
    with netns(server_ns):
        server = subprocess.Popen(
            ["iperf3", "-s", "-1", "-p", "5201"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    try:
        time.sleep(0.5)
        with netns(client_ns):
            out = subprocess.run(
                ["iperf3", "-c", target, "-p", "5201", "-t", str(seconds), "-J"],
                capture_output=True,
                text=True,
                timeout=seconds + 30,
                check=False,
            )
        if out.returncode != 0:
            raise RuntimeError(f"iperf3 -c {target} failed: {out.stdout[-300:]} {out.stderr}")
        result = json.loads(out.stdout)
        return float(result["end"]["sum_received"]["bits_per_second"]) / 1e6
    finally:
        server.kill()
        server.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
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
    state = up(1, log=lambda _m: None)
    try:
        with RealKernel() as kernel:
            apply(kernel, spec)
        a, b = spec.namespaces[0].name, spec.namespaces[2].name
        assert a is not None and b is not None
        results["plain veth+bridge"] = iperf(a, b, "10.99.0.2", args.seconds)
        site, service = state.namespaces["site1"], state.namespaces["service"]
        ll = native_link_local(state, 1)
        results["native IPv6 (worker)"] = iperf(site, service, f"{ll}%eth0", args.seconds)
        results["translated (worker+xlat)"] = iperf(site, service, str(SERVICE_IPV4), args.seconds)
    finally:
        with RealKernel() as kernel:
            remove_spec(kernel, spec)
        down(log=lambda _m: None, only=state.run_id)
    limit = results["plain veth+bridge"]
    if args.json:
        print(
            json.dumps(
                {
                    "mbit_per_s": results,
                    "ratio_to_plain": {k: v / limit for k, v in results.items()},
                },
                indent=2,
            )
        )
    else:
        print(f"{'path':28} {'Mbit/s':>10} {'vs plain':>9}")
        for name, mbit in results.items():
            print(f"{name:28} {mbit:10.1f} {mbit / limit:9.3f}")
        tr, nat = results["translated (worker+xlat)"], results["native IPv6 (worker)"]
        print(f"translated / native: {tr / nat:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
