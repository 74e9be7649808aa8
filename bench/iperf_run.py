"""One iperf3 TCP (or UDP, via `extra`) run between two namespaces, for the benchmarks."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from cjb.common.netlink import netns


def iperf_json(
    client_ns: str, server_ns: str, target: str, seconds: int, *extra: str
) -> dict[str, Any]:
    """`iperf3 -c target` in client_ns against a one-shot server in server_ns: the JSON report."""
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
                ["iperf3", "-c", target, "-p", "5201", "-t", str(seconds), "-J", *extra],
                capture_output=True,
                text=True,
                timeout=seconds + 30,
                check=False,
            )
        if out.returncode != 0:
            raise RuntimeError(
                f"iperf3 -c {target} {extra} failed: {out.stdout[-300:]} {out.stderr}"
            )
        result: dict[str, Any] = json.loads(out.stdout)
        return result
    finally:
        server.kill()
        server.wait()


def received_mbits(result: dict[str, Any]) -> float:
    """Mbit/s as the receiver counted it."""
    return float(result["end"]["sum_received"]["bits_per_second"]) / 1e6
