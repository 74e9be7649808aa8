"""The one iperf3 runner for the benchmarks: its command lines, one-shot and concurrent runs.

Every benchmark builds its iperf3 argv here, so the flags (port, duration, warm-up omitted,
JSON report) mean the same in every table.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from cjb.common.netlink import netns

DEFAULT_PORT = 5201


def server_argv(port: int = DEFAULT_PORT, *, one_off: bool = False) -> list[str]:
    """`iperf3 -s`; `one_off` (-1) exits after one client, so nothing lingers after a run."""
    return ["iperf3", "-s", *(["-1"] if one_off else []), "-p", str(port)]


def client_argv(
    target: str, seconds: int, *extra: str, port: int = DEFAULT_PORT, omit: int = 0
) -> list[str]:
    """`iperf3 -c` with a JSON report; `omit` seconds of TCP slow start are left out (-O)."""
    warmup = ["-O", str(omit)] if omit else []
    return ["iperf3", "-c", target, "-p", str(port), "-t", str(seconds), *warmup, "-J", *extra]


def start_server(
    ns: str, port: int = DEFAULT_PORT, *, one_off: bool = False
) -> subprocess.Popen[bytes]:
    """An iperf3 server in namespace `ns`, its output discarded; the caller stops it."""
    with netns(ns):
        return subprocess.Popen(
            server_argv(port, one_off=one_off),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def iperf_json(
    client_ns: str, server_ns: str, target: str, seconds: int, *extra: str
) -> dict[str, Any]:
    """`iperf3 -c target` in client_ns against a one-shot server in server_ns: the JSON report."""
    server = start_server(server_ns, one_off=True)
    try:
        time.sleep(0.5)
        with netns(client_ns):
            out = subprocess.run(
                client_argv(target, seconds, *extra),
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


def concurrent_mbits(jobs: Sequence[tuple[str, list[str]]], seconds: int) -> list[float]:
    """Start every (namespace, client argv) at once; Mbit/s each as its receiver counted it,
    NaN for a client that failed or timed out (the others' numbers still count)."""
    procs: list[subprocess.Popen[bytes]] = []
    out: list[float] = []
    try:
        for ns, argv in jobs:
            with netns(ns):
                procs.append(
                    subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                )
        for p in procs:
            try:
                stdout, _ = p.communicate(timeout=seconds + 20)
                out.append(received_mbits(json.loads(stdout)))
            except (subprocess.TimeoutExpired, ValueError, KeyError, TypeError):
                p.kill()
                p.wait()
                out.append(float("nan"))
    finally:
        for p in procs:  # all of them when a start failed or we were interrupted
            if p.poll() is None:
                p.kill()
                p.wait()
    return out
