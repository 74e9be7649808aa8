"""The device's update endpoints on a real HTTPS gateway (mTLS): offer, bundle, report, and the
operator's `cjb gateway update` progress from the same state directory."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from controlkit import Device, Gateway, gateway

from cjb.common.control.protocol import EnrollResponse
from cjb.gateway.control.updates import Rollout, UpdateStore


@pytest.fixture
def gw(tmp_path: Path):
    with gateway(tmp_path) as g:
        yield g


def _enrolled(gw: Gateway, serial: str, tenant: str, where: Path) -> tuple[Path, Path]:
    dev = Device(serial)
    gw.ctx.registry.add_device(dev.serial, dev.factory_public, tenant, "cjb-appliance")
    r = gw.enroll(dev)
    assert r.status == 200, r.text
    resp = EnrollResponse.model_validate(r.body)
    where.mkdir()
    return dev.write_client_files(resp.device_certificate_pem, where)


def _cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cjb.cli", "gateway", "update", *args, "--state-dir", str(state)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_offer_download_report_and_progress(gw: Gateway, tmp_path: Path) -> None:
    a = _enrolled(gw, "SN-A", "acme", tmp_path / "a")
    b = _enrolled(gw, "SN-B", "other", tmp_path / "b")
    state = gw.layout.root
    bundle = tmp_path / "v2.raucb"
    bundle.write_bytes(b"signed bundle " * 1000)

    # Nothing offered before a roll-out.
    assert gw.request("GET", "/v1/device/update?running=1.0", client=a).status == 204
    out = _cli(state, "release", "--version", "2.0", str(bundle))
    assert out.returncode == 0, out.stderr
    out = _cli(state, "start", "2.0", "--tenant", "acme")
    assert out.returncode == 0 and "tenants ['acme']" in out.stdout, out.stderr

    offer = gw.request("GET", "/v1/device/update?running=1.0", client=a)
    assert offer.status == 200, offer.text
    assert offer.body["version"] == "2.0"
    assert offer.body["sha256"] == hashlib.sha256(bundle.read_bytes()).hexdigest()
    # Not selected, no certificate, or a bundle not offered to this device: refused.
    assert gw.request("GET", "/v1/device/update?running=1.0", client=b).status == 204
    assert gw.request("GET", "/v1/device/update").status == 401
    assert gw.request("GET", offer.body["path"], client=b).status == 403
    got = gw.request("GET", offer.body["path"], client=a)
    assert got.status == 200 and got.text.encode() == bundle.read_bytes()
    # Already running the offered version: nothing to do.
    assert gw.request("GET", "/v1/device/update?running=2.0", client=a).status == 204

    status = _cli(state, "status")
    assert "2.0: 0/1 good, 0 failed, 0 pending (downloading 1)" in status.stdout, status.stdout

    bad = gw.request(
        "POST", "/v1/device/update/report", client=a,
        data=json.dumps({"version": "2.0", "state": "exploded"}).encode(),
    )  # fmt: skip
    assert bad.status == 400 and "state" in bad.text
    good = gw.request(
        "POST", "/v1/device/update/report", client=a,
        data=json.dumps({"version": "2.0", "state": "good", "running": "2.0"}).encode(),
    )  # fmt: skip
    assert good.status == 200, good.text
    status = _cli(state, "status")
    assert "2.0: 1/1 good, 0 failed, 0 pending" in status.stdout, status.stdout
    assert "SN-A" in status.stdout and "running 2.0" in status.stdout
    assert "SN-B" not in status.stdout  # not selected


def test_a_device_that_rolled_back_is_not_offered_the_same_version_again(
    gw: Gateway, tmp_path: Path
) -> None:
    a = _enrolled(gw, "SN-C", "acme", tmp_path / "c")
    bundle = tmp_path / "v3.raucb"
    bundle.write_bytes(b"v3")
    with UpdateStore.open(gw.layout.api_dir) as store:
        store.add_release("3.0", bundle)
        store.start_rollout(Rollout("3.0", devices=frozenset({"SN-C"})))
    assert gw.request("GET", "/v1/device/update?running=2.0", client=a).status == 200
    r = gw.request(
        "POST", "/v1/device/update/report", client=a,
        data=json.dumps(
            {"version": "3.0", "state": "rolled-back", "running": "2.0",
             "detail": "no heartbeat from the new slot"}
        ).encode(),
    )  # fmt: skip
    assert r.status == 200, r.text
    assert gw.request("GET", "/v1/device/update?running=2.0", client=a).status == 204
    status = _cli(gw.layout.root, "status")
    assert "3.0: 0/1 good, 1 failed" in status.stdout, status.stdout


# -- the appliance's updater against the same gateway ----------------------------------------


def _updater(gw: Gateway, client: tuple[Path, Path], tmp: Path, running: str, install):  # type: ignore[no-untyped-def]
    from cjb.appliance.updater import Updater

    return Updater("127.0.0.1", gw.port, gw.ssl(client), tmp / "dl", running, install=install)


def test_appliance_updater_downloads_verifies_installs_and_reports(
    gw: Gateway, tmp_path: Path
) -> None:
    from cjb.appliance.updater import UpdateFailed, confirm_boot

    a = _enrolled(gw, "SN-U", "acme", tmp_path / "u")
    bundle = tmp_path / "v2.raucb"
    bundle.write_bytes(os.urandom(300_000))
    with UpdateStore.open(gw.layout.api_dir) as store:
        store.add_release("2.0", bundle)
        store.start_rollout(Rollout("2.0", tenants=frozenset({"acme"})))

    installed: list[bytes] = []
    up = _updater(gw, a, tmp_path, "1.0", lambda p: installed.append(p.read_bytes()))
    assert up.check_once() == "2.0"
    assert installed == [bundle.read_bytes()]  # byte for byte through mTLS
    assert not list((tmp_path / "dl").iterdir())  # the download does not linger
    with UpdateStore.open(gw.layout.api_dir) as store:
        assert store.report("SN-U").state == "installed"  # type: ignore[union-attr]

    # After the reboot into 2.0 and a heartbeat: marked good, reported good.
    marked: list[bool] = []
    after = _updater(gw, a, tmp_path, "2.0", lambda p: None)
    confirm_boot(after, "2.0", mark_good=lambda: marked.append(True))
    assert marked == [True]
    assert after.check_once() is None  # runs the offered version: nothing to do
    assert "2.0: 1/1 good" in _cli(gw.layout.root, "status").stdout

    # An installer failure (a bad signature, say) is reported as failed, not retried.
    v3 = tmp_path / "v3.raucb"
    v3.write_bytes(b"not really signed" * 100)
    with UpdateStore.open(gw.layout.api_dir) as store:
        store.add_release("3.0", v3)
        store.start_rollout(Rollout("3.0", devices=frozenset({"SN-U"})))

    def refuse(_p: Path) -> None:
        raise UpdateFailed("rauc install: signature verification failed")

    with pytest.raises(UpdateFailed, match="signature"):
        _updater(gw, a, tmp_path, "2.0", refuse).check_once()
    with UpdateStore.open(gw.layout.api_dir) as store:
        rep = store.report("SN-U")
        assert rep is not None and rep.state == "failed" and "signature" in rep.detail
    assert _updater(gw, a, tmp_path, "2.0", refuse).offer() is None


def test_appliance_updater_refuses_a_bundle_that_does_not_match_its_offer(
    gw: Gateway, tmp_path: Path
) -> None:
    from cjb.appliance.updater import UpdateFailed

    a = _enrolled(gw, "SN-V", "acme", tmp_path / "v")
    bundle = tmp_path / "v2.raucb"
    bundle.write_bytes(b"original" * 1000)
    with UpdateStore.open(gw.layout.api_dir) as store:
        store.add_release("2.0", bundle)
        store.start_rollout(Rollout("2.0", devices=frozenset({"SN-V"})))
    bundle.write_bytes(b"swapped!" * 1000)  # same size, other bytes: after the gateway hashed
    installed: list[Path] = []
    with pytest.raises(UpdateFailed, match="sha256 does not match"):
        _updater(gw, a, tmp_path, "1.0", installed.append).check_once()
    assert installed == [] and not list((tmp_path / "dl").iterdir())
