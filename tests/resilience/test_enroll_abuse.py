"""Enrollment abuse against the real HTTPS API on loopback and a real
SQLite registry: replayed requests, a nonce flood, a clone racing the original, a revoked
device retrying. Every attempt must be refused with a named reason, audited, and leave the
registry consistent (sqlite integrity_check + allocation invariants)."""

from __future__ import annotations

import asyncio
import gc
import os
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from controlkit import Clock, Device, Gateway, Reply, gateway
from reskit import Report, Tally, check_registry, scale

from cjb.common.control.protocol import SIGNATURE_HEADER
from cjb.gateway.control.nonces import NonceStore


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    with gateway(tmp_path) as g:
        yield g


def _add(gw: Gateway, dev: Device, tenant: str) -> None:
    gw.ctx.registry.add_device(dev.serial, dev.factory_public, tenant, "cjb-appliance")


def _spaced(gw: Gateway) -> None:
    """Let the per-address enrollment limiter refill (injected time, not sleeps)."""
    gw.clock.offset += 2.0


def _events(gw: Gateway, serial: str) -> Counter[tuple[str, str | None]]:
    return Counter((a.event, a.reason) for a in gw.ctx.registry.audit_log(serial, 100_000))


def test_replayed_requests_refused_and_audited(gw: Gateway, report: Report) -> None:
    n = scale(20, 500)
    dev = Device("SN-REPLAY")
    _add(gw, dev, "acme")
    body = dev.body(gw.nonce())
    headers = {SIGNATURE_HEADER: dev.sign(body)}
    assert gw.request("POST", "/v1/enroll", data=body, headers=headers).status == 200
    refused = Counter[str]()
    for _ in range(n):
        _spaced(gw)
        r = gw.request("POST", "/v1/enroll", data=body, headers=headers)
        refused[f"{r.status} {(r.body or {}).get('error')}"] += 1
    audited = _events(gw, dev.serial)[("enroll-refused", "nonce-replayed")]
    survived = min(refused["409 nonce-replayed"], audited)
    report(
        "enroll-replay", n, survived, n - survived,
        f"{dict(refused)}, {audited} audited",
        means="replay refused 409 nonce-replayed and audited (lost = any other answer)",
    )  # fmt: skip
    assert refused == {"409 nonce-replayed": n}, refused
    assert audited == n
    check_registry(gw.layout.registry)


def test_nonce_flood_is_bounded_in_memory(report: Report) -> None:
    """The store itself, at the gateway's default cap (10,000): a flood of N issues never
    holds more than the cap; measured with tracemalloc (the flood over HTTPS from many
    addresses is tests/test_control_api.py::test_nonce_flood_from_many_addresses...)."""
    cap, flood = 10_000, scale(100_000, 1_000_000)
    store = NonceStore(ttl=60.0, cap=cap)
    gc.collect()
    tracemalloc.start()
    marks: list[int] = []
    bounded = Tally()
    try:
        # Warm-up: fill and churn 5x the cap so the dict tables reach their steady size;
        # then the flood, measured at ten checkpoints.
        for _ in range(5 * cap):
            store.issue(1000.0, os.urandom(32))
        for i in range(flood):
            store.issue(1000.0 + i * 1e-6, os.urandom(32))
            bounded.add(len(store) <= cap, "store above its cap")
            if (i + 1) % (flood // 10) == 0:
                marks.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    at_cap, after = marks[0], marks[-1]
    report(
        "nonce-flood", *bounded.counts,
        f"store {len(store)} <= cap {cap}, {at_cap / 1024:.0f} KiB at cap, "
        f"{max(marks) / 1024:.0f} KiB peak, {after / 1024:.0f} KiB after the flood",
        means="issues after which the store held at most its cap",
    )  # fmt: skip
    assert len(store) <= cap
    assert store.evicted == flood + 4 * cap
    assert max(marks) <= marks[0] + 64 * 1024, marks


def test_nonce_flood_over_https_rate_limited(gw: Gateway, report: Report) -> None:
    gw.clock.freeze()
    n = scale(200, 2000)

    async def flood() -> Counter[int | str]:
        async with aiohttp.ClientSession() as s:
            replies = await asyncio.gather(
                *(gw.arequest(s, "POST", "/v1/enroll/nonce") for _ in range(n)),
                return_exceptions=True,
            )
        return Counter(
            r.status if not isinstance(r, BaseException) else type(r).__name__ for r in replies
        )

    statuses = asyncio.run(flood())
    answered = Tally()
    for status, count in statuses.items():
        for _ in range(count):
            answered.add(status in (200, 429), f"x {status}")
    report(
        "nonce-flood-https", *answered.counts,
        f"{statuses[200]} issued, {statuses[429]} x 429 {answered.lost_note()}".rstrip(),
        means="answered as intended: a nonce (200) or rate-limited (429); lost = 5xx, "
        "another status, no answer",
    )  # fmt: skip
    assert set(statuses) <= {200, 429} and statuses[429] >= n - 20, statuses
    assert len(gw.ctx.nonces) <= statuses[200]


def test_clone_concurrent_with_original(gw: Gateway, report: Report) -> None:
    rounds = scale(5, 20)
    original = Device("SN-CLONE")
    _add(gw, original, "acme")
    clone = Device("SN-CLONE", factory_key=original.factory_key)
    outcomes = Counter[str]()
    races = Tally()
    for _ in range(rounds):
        _spaced(gw)
        pair = [(d, gw.nonce()) for d in (original, clone)]

        async def race(pair: list[tuple[Device, str]] = pair) -> list[Reply]:
            async with aiohttp.ClientSession() as s:
                jobs = []
                for d, n in pair:
                    body = d.body(n)
                    jobs.append(
                        gw.arequest(
                            s, "POST", "/v1/enroll", data=body,
                            headers={SIGNATURE_HEADER: d.sign(body)},
                        )
                    )  # fmt: skip
                return list(await asyncio.gather(*jobs))

        replies = asyncio.run(race())
        errors = sorted(str((r.body or {}).get("error", "ok")) for r in replies)
        outcomes.update(errors)
        races.add(
            sorted(r.status for r in replies) == [200, 409] and errors == ["clone-suspected", "ok"],
            "not one bound + one 409 clone-suspected",
        )
        gw.ctx.registry.revoke("SN-CLONE", "next round", "test")
        gw.ctx.registry.reinstate("SN-CLONE", "test")
        check_registry(gw.layout.registry)
    alerts = _events(gw, "SN-CLONE")[("clone-alert", "clone-suspected")]
    report(
        "enroll-clone-race", *races.counts, f"outcomes {dict(outcomes)}, {alerts} clone alerts",
        means="races where exactly one of original/clone was bound and the other refused "
        "409 clone-suspected",
    )  # fmt: skip
    assert outcomes == {"ok": rounds, "clone-suspected": rounds}
    assert alerts == rounds


def test_revoked_device_retrying(gw: Gateway, report: Report) -> None:
    n = scale(20, 200)
    dev = Device("SN-REVOKED")
    _add(gw, dev, "acme")
    assert gw.enroll(dev).status == 200
    gw.ctx.registry.revoke(dev.serial, "stolen", "test")
    start = time.monotonic()
    statuses = Counter[str]()
    for _ in range(n):
        _spaced(gw)
        r = gw.enroll(dev)
        statuses[f"{r.status} {(r.body or {}).get('error')}"] += 1
    took = time.monotonic() - start
    refused = statuses["403 enroll-refused"]
    report(
        "enroll-revoked-retry", n, refused, n - refused,
        f"{dict(statuses)}, {n / took:.0f} tries/s",
        means="retry refused 403 enroll-refused, the wire hiding the reason "
        "(lost = any other answer)",
    )  # fmt: skip
    assert statuses == {"403 enroll-refused": n}, statuses  # the wire hides the reason
    assert _events(gw, dev.serial)[("enroll-refused", "device-revoked")] == n
    assert gw.ctx.registry.desired_tunnels() == []
    check_registry(gw.layout.registry)


def test_many_devices_enroll_unique(tmp_path: Path, report: Report) -> None:
    """Enrollment rate and allocation uniqueness over many tenants, concurrently."""
    n = scale(20, 100)
    with gateway(tmp_path, Clock()) as gw:
        devices = [Device(f"SN-{i:04d}") for i in range(n)]
        for i, d in enumerate(devices):
            _add(gw, d, f"tenant{i}")
        # One test address plays n appliances: lift the per-address limits (tested above)
        # instead of moving the clock, which would expire the first nonces.
        gw.ctx.limiter.allow = lambda *_a: True
        gw.ctx.enroll_limiter.allow = lambda *_a: True
        nonces = [gw.nonce() for _ in devices]

        async def all_at_once() -> list[Reply]:
            async with aiohttp.ClientSession() as s:
                jobs = []
                for d, nonce in zip(devices, nonces, strict=True):
                    body = d.body(nonce)
                    jobs.append(
                        gw.arequest(
                            s, "POST", "/v1/enroll", data=body,
                            headers={SIGNATURE_HEADER: d.sign(body)},
                        )
                    )  # fmt: skip
                return list(await asyncio.gather(*jobs))

        start = time.monotonic()
        replies = asyncio.run(all_at_once())
        took = time.monotonic() - start
        ok = sum(r.status == 200 for r in replies)
        vnis = len({t.vni for t in gw.ctx.registry.desired_tunnels()})
        report(
            "enroll-rate", n, ok, n - ok,
            f"{n / took:.1f} enrollments/s concurrent (noisy host), {vnis} distinct VNIs",
            means="concurrent enrollments answered 200",
        )  # fmt: skip
        assert ok == n, [r.text for r in replies if r.status != 200][:3]
        check_registry(gw.layout.registry)
        assert vnis == n
