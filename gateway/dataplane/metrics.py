"""The data plane's Prometheus metrics, read from its status file at scrape time.

The data plane (`cjb gateway run`) and the API (`cjb gateway serve`) are separate
processes; the status file the data plane rewrites every second is the interface between
them. Plug this into the API's metrics hook:
`serve(..., extra_collectors=[StatusFileCollector(path)])` (gateway/control/metrics.py).
A missing or stale file yields `cjb_dataplane_up 0` and nothing else, never an error.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cjb.gateway.dataplane.status import STALE_AFTER, read_status


def _int(v: object) -> int:
    return v if isinstance(v, int) else 0


class StatusFileCollector(Collector):
    def __init__(self, status_file: Path, clock: Callable[[], float] = time.time) -> None:
        self.status_file = status_file
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        status = read_status(self.status_file)
        fresh = (
            status is not None
            and not status.get("stopped")
            and self.clock() - float(status.get("updated", 0)) < STALE_AFTER  # type: ignore[arg-type]
        )
        up = GaugeMetricFamily("cjb_dataplane_up", "1 while the data plane publishes status")
        up.add_metric([], 1 if fresh else 0)
        yield up
        if not fresh or status is None:
            return
        tenants: dict[str, Any] = status.get("tenants") or {}  # type: ignore[assignment]
        frames = CounterMetricFamily(
            "cjb_dataplane_frames", "Frames per tenant port", labels=["tenant", "port", "direction"]
        )
        nbytes = CounterMetricFamily(
            "cjb_dataplane_bytes", "Bytes per tenant port", labels=["tenant", "port", "direction"]
        )
        drops = CounterMetricFamily(
            "cjb_dataplane_drops", "Frames dropped, by reason", labels=["tenant", "reason"]
        )
        spoofed = CounterMetricFamily(
            "cjb_vni_spoofed", "VXLAN packets dropped by the VNI binding", labels=["tenant"]
        )
        group_limited = CounterMetricFamily(
            "cjb_group_limited",
            "Broadcast/multicast VXLAN frames over the tenant's limit, dropped",
            labels=["tenant"],
        )
        tunnel_up = GaugeMetricFamily(
            "cjb_tunnel_up", "1 when the tenant's WireGuard session is fresh", labels=["tenant"]
        )
        handshake = GaugeMetricFamily(
            "cjb_tunnel_last_handshake_age_seconds",
            "Seconds since the tenant appliance's last WireGuard handshake",
            labels=["tenant"],
        )
        wg_bytes = CounterMetricFamily(
            "cjb_tunnel_bytes", "WireGuard bytes per tenant", labels=["tenant", "direction"]
        )
        yield from _host_metrics(status)
        for name, t in sorted(tenants.items()):
            router = t.get("router") or {}
            for port, c in sorted((router.get("ports") or {}).items()):
                for direction in ("rx", "tx"):
                    frames.add_metric([name, port, direction], _int(c.get(f"{direction}_frames")))
                    nbytes.add_metric([name, port, direction], _int(c.get(f"{direction}_bytes")))
            for reason, n in sorted((router.get("drops") or {}).items()):
                drops.add_metric([name, reason], _int(n))
            binding = t.get("vni_binding") or {}
            spoofed.add_metric([name], _int(binding.get("vni_spoofed")))
            group_limited.add_metric([name], _int(binding.get("group_limited")))
            wg = t.get("wireguard")
            if isinstance(wg, dict):
                tunnel_up.add_metric([name], 1 if wg.get("up") else 0)
                age = wg.get("handshake_age_seconds")
                if isinstance(age, int | float):
                    handshake.add_metric([name], float(age))
                wg_bytes.add_metric([name, "rx"], _int(wg.get("rx_bytes")))
                wg_bytes.add_metric([name, "tx"], _int(wg.get("tx_bytes")))
        yield from (frames, nbytes, drops, spoofed, group_limited, tunnel_up, handshake, wg_bytes)


def _host_metrics(status: dict[str, Any]) -> Iterator[Metric]:
    """Drops before any tenant: the host's input policy and the VXLAN guard (tc)."""
    host = CounterMetricFamily(
        "cjb_host_input_drops", "Packets the gateway host's input policy dropped", labels=["reason"]
    )
    for reason, n in sorted((status.get("host_input") or {}).items()):
        host.add_metric([reason], _int(n))
    yield host
    guard = status.get("vxlan_guard") or {}
    active = GaugeMetricFamily(
        "cjb_vxlan_guard_active", "1 when the VNI binding is enforced in tc as well as nftables"
    )
    active.add_metric([], 1 if guard.get("active") else 0)
    yield active
    verdicts = CounterMetricFamily(
        "cjb_vxlan_guard_packets", "VXLAN packets by the tc guard's verdict", labels=["verdict"]
    )
    for verdict, n in sorted((guard.get("drops") or {}).items()):
        verdicts.add_metric([verdict], _int(n))
    yield verdicts
    fast = status.get("fast_path") or {}
    kernel = GaugeMetricFamily(
        "cjb_fast_path_kernel",
        "1 when the tc-eBPF fast path is in use (cjb_fast_path_kernel_tenants: for how many), "
        "0 when the userspace worker translates everything (`cjb gateway status` says why)",
    )
    kernel.add_metric([], 1 if fast.get("mode") == "kernel" else 0)
    yield kernel
    tenants = GaugeMetricFamily(
        "cjb_fast_path_kernel_tenants", "Tenants whose common case the tc-eBPF fast path carries"
    )
    tenants.add_metric([], _int(fast.get("kernel_tenants")))
    yield tenants
