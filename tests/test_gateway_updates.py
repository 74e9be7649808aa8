"""Staged roll-outs of appliance images: selection, offers, reports and progress (real SQLite)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cjb.gateway.control.updates import Rollout, UpdateError, UpdateStore, bucket, progress

SERIALS = [f"CJB-{i:04d}" for i in range(1000)]


def test_percent_selection_is_stable_grows_monotonically_and_is_near_the_share() -> None:
    ten = {s for s in SERIALS if Rollout("2.0", percent=10).selects(s, None)}
    fifty = {s for s in SERIALS if Rollout("2.0", percent=50).selects(s, None)}
    assert ten < fifty  # raising the percentage only adds devices
    assert 60 <= len(ten) <= 140 and 430 <= len(fifty) <= 570
    # Another version starts with other devices.
    other = {s for s in SERIALS if Rollout("3.0", percent=10).selects(s, None)}
    assert other != ten
    assert all(0 <= bucket("2.0", s) < 100 for s in SERIALS)
    assert not any(Rollout("2.0", devices=frozenset({"X"})).selects(s, None) for s in SERIALS)


def test_tenant_and_device_lists_select_exactly_those() -> None:
    r = Rollout("2.0", tenants=frozenset({"acme"}), devices=frozenset({"CJB-0007"}))
    assert r.selects("CJB-0001", "acme")
    assert r.selects("CJB-0007", "other")
    assert not r.selects("CJB-0002", "other")
    assert not r.selects("CJB-0002", None)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"version": "2.0"}, "selects nobody"),
        ({"version": "2.0", "percent": 101}, "0..100"),
        ({"version": "../etc", "percent": 5}, "version '../etc'"),
        ({"version": "", "percent": 5}, "version ''"),
    ],
)
def test_bad_rollouts_say_what_is_wrong(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(UpdateError, match=re.escape(needle)):
        Rollout(**kwargs)  # type: ignore[arg-type]


def test_store_offers_reports_and_progress(tmp_path: Path) -> None:
    bundle = tmp_path / "v2.raucb"
    bundle.write_bytes(b"bundle-bytes" * 100)
    now = [1000.0]
    with UpdateStore.open(tmp_path, clock=lambda: now[0]) as store:
        with pytest.raises(UpdateError, match=r"no release 2\.0"):
            store.start_rollout(Rollout("2.0", percent=100))
        rel = store.add_release("2.0", bundle)
        assert rel.size == 1200 and len(rel.sha256) == 64
        with pytest.raises(UpdateError, match="exists already"):
            store.add_release("2.0", bundle)
        with pytest.raises(UpdateError, match="no such file"):
            store.add_release("2.1", tmp_path / "missing.raucb")
        store.start_rollout(Rollout("2.0", devices=frozenset({"A", "B"})))
        offer = store.offer("A", "t1", running="1.0")
        assert offer is not None and offer.version == "2.0"
        assert store.offer("C", "t1", running="1.0") is None  # not selected
        assert store.offer("B", "t2", running="2.0") is None  # runs it already
        store.record("A", "2.0", "good", running="2.0")
        store.record("B", "2.0", "rolled-back", running="1.0", detail="agent never reached gw")
        assert store.offer("B", "t2", running="1.0") is None  # came back: not offered again
        with pytest.raises(UpdateError, match="state 'exploded'"):
            store.record("A", "2.0", "exploded", running="2.0")
        devices = [("A", "t1"), ("B", "t2"), ("C", "t1")]
        p = progress(store.rollout(), devices, store.reports())  # type: ignore[arg-type]
        assert (p.selected, p.good, p.failed, p.pending) == (2, 1, 1, 0)
        assert p.line().startswith("2.0: 1/2 good, 1 failed, 0 pending")
    # Persisted: a new store on the same directory sees the same roll-out and reports.
    with UpdateStore.open(tmp_path) as again:
        current = again.rollout()
        assert current is not None and current.devices == frozenset({"A", "B"})
        report = again.report("B")
        assert report is not None and report.state == "rolled-back"
