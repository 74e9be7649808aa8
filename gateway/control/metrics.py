"""GET /metrics: Prometheus text format via prometheus-client, computed at scrape time.

Numbers come from the registry (so they survive restarts: enrollments by outcome are counted
from the audit log) plus the API process's own counters. A private CollectorRegistry per app
(never the global one), so tests can run several gateways in one process.

Data-plane hook: pass more collectors to `render(..., extra)` via
`make_app(..., extra_collectors=[...])`: any object with `collect()` yielding metric families,
e.g. per-tenant frames/bytes/drops from the data plane's status file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cjb.gateway.control.nonces import NonceStore
from cjb.gateway.control.ratelimit import RateLimiter
from cjb.gateway.control.registry import Registry

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class ApiCounters:
    nonces_issued: int = 0
    operator_auth_failed: int = 0
    operator_auth_limited: int = 0


# Stored heartbeats are bounded on the wire (protocol.MAX_WIRE_INT), but rows written before
# that bound, or by hand, may hold anything: a value that is not a finite number in range is
# left out of the scrape instead of failing it.
_MAX_EXPORTED = float(2**53)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        f = float(value)
    except OverflowError:
        return None
    return f if math.isfinite(f) and abs(f) <= _MAX_EXPORTED else None


class ControlCollector(Collector):
    def __init__(
        self,
        registry: Registry,
        clock: Callable[[], float],
        nonces: NonceStore,
        limiter: RateLimiter,
        counters: ApiCounters,
        enroll_limiter: RateLimiter | None = None,
        operator_failures: RateLimiter | None = None,
    ) -> None:
        self.operator_failures = operator_failures
        self.registry = registry
        self.clock = clock
        self.nonces = nonces
        self.limiter = limiter
        self.counters = counters
        self.enroll_limiter = enroll_limiter

    def collect(self) -> Iterator[Metric]:
        enroll = CounterMetricFamily(
            "cjb_enrollments",
            "Enrollment attempts by outcome (ok, or the refusal reason)",
            labels=["outcome"],
        )
        for outcome, n in sorted(self.registry.enrollment_outcomes().items()):
            enroll.add_metric([outcome], n)
        yield enroll
        devices = GaugeMetricFamily("cjb_devices", "Devices by state", labels=["state"])
        for state, n in sorted(self.registry.device_states().items()):
            devices.add_metric([state], n)
        yield devices
        age = GaugeMetricFamily(
            "cjb_tenant_heartbeat_age_seconds",
            "Seconds since the tenant's enrolled appliance last sent a heartbeat",
            labels=["tenant", "serial"],
        )
        tunnel_up = GaugeMetricFamily(
            "cjb_tenant_tunnel_up",
            "1 if the appliance's last heartbeat reported its tunnel up",
            labels=["tenant", "serial"],
        )
        handshake = GaugeMetricFamily(
            "cjb_tenant_last_handshake_age_seconds",
            "WireGuard handshake age the appliance reported, plus the heartbeat's own age",
            labels=["tenant", "serial"],
        )
        now = self.clock()
        for d in self.registry.devices():
            if d.state != "enrolled" or d.tenant is None:
                continue
            labels = [d.tenant, d.serial]
            seen = d.last_seen if d.last_seen is not None else d.enrolled_at
            if seen is not None:
                age.add_metric(labels, max(0.0, now - seen))
            hb = d.heartbeat or {}
            if d.last_seen is not None and "tunnel_up" in hb:
                tunnel_up.add_metric(labels, 1.0 if hb["tunnel_up"] else 0.0)
                shake = _number(hb.get("last_handshake_age_seconds"))
                if shake is not None:
                    handshake.add_metric(labels, shake + max(0.0, now - d.last_seen))
        yield age
        yield tunnel_up
        yield handshake
        issued = CounterMetricFamily("cjb_nonces_issued", "Enrollment nonces issued")
        issued.add_metric([], self.counters.nonces_issued)
        yield issued
        limited = CounterMetricFamily(
            "cjb_nonce_requests_rate_limited", "Nonce requests refused by the per-IP rate limit"
        )
        limited.add_metric([], self.limiter.refused)
        yield limited
        if self.enroll_limiter is not None:
            elimited = CounterMetricFamily(
                "cjb_enroll_requests_rate_limited",
                "Enrollment requests refused by the per-IP rate limit",
            )
            elimited.add_metric([], self.enroll_limiter.refused)
            yield elimited
        evicted = CounterMetricFamily(
            "cjb_nonces_evicted", "Nonces forgotten before expiry because the store was full"
        )
        evicted.add_metric([], self.nonces.evicted)
        yield evicted
        held = GaugeMetricFamily("cjb_nonces_held", "Nonces held in memory (issued + used)")
        held.add_metric([], len(self.nonces))
        yield held
        other = CounterMetricFamily(
            "cjb_nonces_evicted_other_source",
            "Nonces forgotten to make room for another source's (only when the store is full "
            "and the owner held the most)",
        )
        other.add_metric([], self.nonces.evicted_other_source)
        yield other
        failed = CounterMetricFamily(
            "cjb_operator_auth_failed", "Operator requests refused for a bad credential"
        )
        failed.add_metric([], self.counters.operator_auth_failed)
        yield failed
        op_limited = CounterMetricFamily(
            "cjb_operator_auth_rate_limited",
            "Operator requests refused unchecked: their source failed too often",
        )
        op_limited.add_metric([], self.counters.operator_auth_limited)
        yield op_limited
        pruned = CounterMetricFamily(
            "cjb_audit_pruned", "Audit rows removed by retention ([audit] max_rows, max_age_days)"
        )
        pruned.add_metric([], self.registry.audit_pruned())
        yield pruned
        rows = GaugeMetricFamily("cjb_audit_rows", "Rows in the audit log")
        rows.add_metric([], self.registry.audit_rows())
        yield rows


def render(collectors: Iterable[Collector]) -> bytes:
    reg = CollectorRegistry(auto_describe=False)
    for c in collectors:
        reg.register(c)
    return generate_latest(reg)
