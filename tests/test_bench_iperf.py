"""bench/iperf_run.py, the one iperf3 runner: the command lines every benchmark uses, and the
concurrent runner for real in one namespace (loopback only)."""

from __future__ import annotations

import math
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cjb.common.netlink import Namespace, NetworkSpec, apply, netns, remove
from cjb.common.netlink.real import RealKernel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import iperf_run


def test_client_argv_is_the_one_layout() -> None:
    assert iperf_run.client_argv("192.168.0.100", 5) == [
        "iperf3", "-c", "192.168.0.100", "-p", "5201", "-t", "5", "-J",
    ]  # fmt: skip
    # Fig. 8's form: its own port per tenant, one warm-up second left out, extras last.
    assert iperf_run.client_argv("fe80::1%vx0", 3, "-R", port=5203, omit=1) == [
        "iperf3", "-c", "fe80::1%vx0", "-p", "5203", "-t", "3", "-O", "1", "-J", "-R",
    ]  # fmt: skip


def test_server_argv() -> None:
    assert iperf_run.server_argv() == ["iperf3", "-s", "-p", "5201"]
    assert iperf_run.server_argv(5299, one_off=True) == ["iperf3", "-s", "-1", "-p", "5299"]


def test_received_mbits_reads_the_receiver_side() -> None:
    report = {"end": {"sum_received": {"bits_per_second": 2.5e9}, "sum_sent": {}}}
    assert iperf_run.received_mbits(report) == 2500.0


@pytest.fixture
def one_namespace() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a network namespace")
    if shutil.which("iperf3") is None:
        pytest.skip("missing iperf3: apt-get install -y --no-install-recommends iperf3")
    prefix = f"cjbip{secrets.token_hex(2)}-"
    spec = NetworkSpec(
        owner=f"test-iperf-{prefix}",
        namespace_prefix=prefix,
        namespaces=(Namespace(f"{prefix}a", owned=True),),
    )
    with RealKernel() as kernel:
        try:
            apply(kernel, spec)
            with netns(f"{prefix}a"):
                subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
            yield f"{prefix}a"
        finally:
            remove(kernel, spec)
            assert not [n for n in kernel.namespaces() if n.startswith(prefix)]


@pytest.mark.root
def test_concurrent_mbits_counts_each_client_and_nan_for_a_failed_one(one_namespace: str) -> None:
    ns = one_namespace
    server = iperf_run.start_server(ns, 5301, one_off=True)
    try:
        ok = iperf_run.client_argv("127.0.0.1", 1, "-b", "10M", port=5301)
        refused = iperf_run.client_argv("127.0.0.1", 1, port=5302)  # nothing listens there
        for _ in range(50):  # the server needs a moment to listen
            with netns(ns):
                probe = subprocess.run(["ss", "-Htln", "sport = :5301"], capture_output=True)
            if probe.stdout.strip():
                break
            time.sleep(0.1)
        got = iperf_run.concurrent_mbits([(ns, ok), (ns, refused)], seconds=1)
    finally:
        server.kill()
        server.wait()
    assert 5 < got[0] < 15, got  # paced at 10 Mbit/s
    assert math.isnan(got[1])
