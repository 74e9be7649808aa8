"""`cjb gateway init|device …|serve`, through click, on real state dirs and SQLite."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from click.testing import CliRunner
from controlkit import Device

from cjb.cli.main import main
from cjb.gateway.control.registry import Registry


def _cjb(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return r.exit_code, r.output


def test_init_device_add_import_list_show_revoke(tmp_path: Path) -> None:
    sd = str(tmp_path / "gw")
    code, out = _cjb(
        "gateway", "init", "--state-dir", sd, "--san", "gw.example", "--endpoint", "192.0.2.1:51820"
    )
    assert code == 0, out
    assert "operator token" in out
    code, out = _cjb("gateway", "init", "--state-dir", sd)
    assert code == 1 and "refusing to overwrite" in out

    def add(serial: str, pubkey: str) -> tuple[int, str]:
        return _cjb(
            "gateway",
            "device",
            "add",
            "--state-dir",
            sd,
            "--serial",
            serial,
            "--pubkey",
            pubkey,
            "--tenant",
            "acme",
        )

    a = Device("SN-A")
    code, out = add("SN-A", a.factory_public)
    assert code == 0 and "added" in out, out
    code, out = add("SN-B", "short")
    assert code == 1 and "factory_public_key" in out

    lines = tmp_path / "records.jsonl"
    b, c = Device("SN-B"), Device("SN-C")
    lines.write_text(f"{b.record('beta')}\n# comment\n{c.record(None)}\n")
    code, out = _cjb(
        "gateway", "device", "import", "--state-dir", sd, "--tenant", "gamma", str(lines)
    )
    assert code == 0 and "imported 2" in out, out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"serial": "SN-D"}\n')
    code, out = _cjb("gateway", "device", "import", "--state-dir", sd, str(bad))
    assert code == 1 and "bad.jsonl:1" in out and "factory_public_key" in out

    code, out = _cjb("gateway", "device", "list", "--state-dir", sd)
    assert code == 0
    rows = out.splitlines()
    assert rows[0].split()[:3] == ["serial", "tenant", "state"]
    assert [r.split()[:3] for r in rows[1:]] == [
        ["SN-A", "acme", "inventory"],
        ["SN-B", "beta", "inventory"],
        ["SN-C", "gamma", "inventory"],
    ]
    code, out = _cjb("gateway", "device", "revoke", "--state-dir", sd, "SN-B", "--reason", "lost")
    assert code == 0 and "revoked SN-B" in out
    code, out = _cjb("gateway", "device", "show", "--state-dir", sd, "SN-B")
    assert code == 0 and "revoked" in out and "lost" in out
    assert b.factory_public not in out  # keys shortened in tables
    code, out = _cjb("gateway", "device", "reinstate", "--state-dir", sd, "SN-B")
    assert code == 0 and "reinstated SN-B" in out
    code, out = _cjb("gateway", "device", "reinstate", "--state-dir", sd, "SN-B")
    assert code == 1 and "revoke it first" in out
    code, out = _cjb("gateway", "device", "show", "--state-dir", sd, "SN-X")
    assert code == 1 and "no device" in out
    cat = tmp_path / "catalog.json"
    cat.write_text('[{"instance": "Files", "service_type": "_smb._tcp", "port": 445}]')
    code, out = _cjb("gateway", "catalog", "set", "--state-dir", sd, "acme", str(cat))
    assert code == 0 and "config_version 2" in out, out
    code, out = _cjb("gateway", "catalog", "show", "--state-dir", sd, "acme")
    assert json.loads(out)["catalog"][0]["service_type"] == "_smb._tcp"
    cat.write_text('[{"instance": "x", "service_type": "http", "port": 0}]')
    code, out = _cjb("gateway", "catalog", "set", "--state-dir", sd, "acme", str(cat))
    assert code == 1 and "service_type" in out and "port" in out
    code, out = _cjb("gateway", "device", "list", "--state-dir", str(tmp_path / "none"))
    assert code == 1 and "gateway init" in out


def test_serve_process_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    sd = tmp_path / "gw"
    assert _cjb("gateway", "init", "--state-dir", str(sd))[0] == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cjb.cli",
            "gateway",
            "serve",
            "--state-dir",
            str(sd),
            "--listen",
            "127.0.0.1",
            "--port",
            str(port),
            "--dataplane-status",
            str(tmp_path / "no-dataplane-yet.json"),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "serve exited early"
            assert time.monotonic() < deadline, "serve did not listen within 60 s"
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        # /metrics from outside: the registry's numbers plus the data plane hook, which says
        # the data plane is not up (no status file yet) rather than failing the scrape.
        ctx = ssl.create_default_context(cafile=str(sd / "ca/ca.pem"))
        token = (sd / "operator.token").read_text().strip()
        req = urllib.request.Request(
            f"https://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(req, context=ctx, timeout=20) as resp:  # noqa: S310
            text = resp.read().decode()
        assert 'cjb_devices{state="inventory"} 0.0' in text
        assert "cjb_dataplane_up 0.0" in text
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    events = [json.loads(line)["msg"] for line in err.splitlines()]
    assert events == ["serving", "stopped"]
    with Registry.open(sd / "registry.sqlite3") as reg:
        assert reg.integrity_check() == "ok"
