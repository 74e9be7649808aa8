"""`lab up`'s waits: timeouts scale with the tenant count, and a timeout names the
nodes still missing and why; the agents' repair tick is paced for many appliances."""

from __future__ import annotations

import json
from pathlib import Path

from cjb.lab import readiness
from cjb.lab.enrolled import check_interval, summary


def _gateway(run_dir: Path, tenants: dict[str, dict[str, object]], directory: bool = True) -> None:
    (run_dir / "gateway").mkdir(parents=True, exist_ok=True)
    (run_dir / "gateway" / "status.json").write_text(json.dumps({"tenants": tenants}))
    if directory:
        (run_dir / "tenants.json").write_text("{}")


def _appliance(run_dir: Path, k: int, **status: object) -> None:
    (run_dir / f"appliance{k}").mkdir(parents=True, exist_ok=True)
    (run_dir / f"appliance{k}" / "status.json").write_text(json.dumps(status))


def test_timeouts_grow_with_the_tenants() -> None:
    assert (
        readiness.enroll_timeout(3) < readiness.enroll_timeout(20) < readiness.enroll_timeout(100)
    )
    # 100 appliances came up in ~60 s on the 2-core machine: room for a shared machine.
    assert readiness.enroll_timeout(100) >= 200


def test_gateway_missing_names_each_tenant_and_its_appliance(tmp_path: Path) -> None:
    assert readiness.gateway_missing(tmp_path, 2) == [
        "gateway: no status.json yet (is `cjb gateway run` starting?)"
    ]
    _gateway(tmp_path, {"tenant1": {"state": "running"}, "tenant3": {"state": "error",
             "error": "cannot open ports"}})  # fmt: skip
    _appliance(tmp_path, 2, status_line="enrolling: waiting for a nonce", errors=[])
    assert readiness.gateway_missing(tmp_path, 3) == [
        "tenant2: not in the gateway yet; appliance2: enrolling: waiting for a nonce",
        "tenant3: error: cannot open ports",
    ]


def test_gateway_ready_needs_every_tenant_running_and_the_directory(tmp_path: Path) -> None:
    running = {f"tenant{k}": {"state": "running"} for k in (1, 2)}
    _gateway(tmp_path, running, directory=False)
    assert readiness.gateway_missing(tmp_path, 2) == [
        "gateway: tenant directory tenants.json not written yet"
    ]
    _gateway(tmp_path, running)
    assert readiness.gateway_missing(tmp_path, 2) == []


def test_an_agent_error_is_what_the_message_shows(tmp_path: Path) -> None:
    _gateway(tmp_path, {})
    _appliance(tmp_path, 1, status_line="enrolling", errors=["tunnel: wireguard-go failed"])
    assert readiness.gateway_missing(tmp_path, 1) == [
        "tenant1: not in the gateway yet; appliance1: error: tunnel: wireguard-go failed"
    ]


def test_appliances_missing_until_the_tunnel_is_up_on_the_bridge(tmp_path: Path) -> None:
    _appliance(tmp_path, 1, tunnel_up=True, tunnel_on_bridge=True)
    detail = "wireguard wgl1a2ba2 -> [fd63::2]:51820, no handshake yet"
    _appliance(tmp_path, 2, tunnel_up=False, tunnel_on_bridge=True, tunnel_detail=detail)
    assert readiness.appliances_missing(tmp_path, 3) == [
        "appliance2: tunnel up=False on bridge=True: "
        "wireguard wgl1a2ba2 -> [fd63::2]:51820, no handshake yet",
        "appliance3: agent has written no status yet",
    ]


def test_describe_shows_a_few_and_counts_the_rest() -> None:
    text = readiness.describe([f"appliance{k}: no handshake" for k in range(1, 21)])
    lines = text.splitlines()
    assert lines[0] == "  appliance1: no handshake"
    assert len(lines) == readiness.SHOWN + 1
    assert lines[-1] == f"  ... and {20 - readiness.SHOWN} more"


def test_agents_tick_every_second_in_small_labs_and_slower_in_large_ones() -> None:
    assert check_interval(1) == check_interval(15) == 1.0
    assert check_interval(20) == 1.3
    assert check_interval(100) == 6.7
    # The lab as a whole stays near LAB_TICKS_PER_SECOND repair ticks per second.
    assert 100 / check_interval(100) <= 15


def test_enrollment_summary_lists_a_few_and_summarises_many() -> None:
    assert summary({"B": 2.0, "A": 1.25}) == "A 1.2s, B 2.0s"
    many = {f"S{k:03d}": float(k) for k in range(1, 101)}
    assert summary(many) == "100 appliances, first 1.0s, median 51.0s, last 100.0s"
