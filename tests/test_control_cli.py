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
import urllib.error
import urllib.request
from pathlib import Path

import pytest
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
    assert "operator API   127.0.0.1 port 8444" in out and "operator add NAME" in out
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_process_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    sd = tmp_path / "gw"
    code, out = _cjb("gateway", "init", "--state-dir", str(sd), "--operator", "ops")
    assert code == 0, out
    token = out.strip().splitlines()[-1]
    assert token.startswith("cjbop.ops.")
    port, op_port = _free_port(), _free_port()
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
            "--operator-port",
            str(op_port),
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
            with socket.socket() as s, socket.socket() as s2:
                if s.connect_ex(("127.0.0.1", port)) == 0 == s2.connect_ex(("127.0.0.1", op_port)):
                    break
            time.sleep(0.05)
        # /metrics from outside: the registry's numbers plus the data plane hook, which says
        # the data plane is not up (no status file yet) rather than failing the scrape.
        ctx = ssl.create_default_context(cafile=str(sd / "api/ca/ca.pem"))
        headers = {"Authorization": f"Bearer {token}"}
        req = urllib.request.Request(f"https://127.0.0.1:{port}/metrics", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as not_here:
            urllib.request.urlopen(req, context=ctx, timeout=20)  # noqa: S310
        assert not_here.value.code == 404  # the device listener has no /metrics
        req = urllib.request.Request(f"https://127.0.0.1:{op_port}/metrics", headers=headers)
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
    with Registry.open(sd / "api/registry.sqlite3") as reg:
        assert reg.integrity_check() == "ok"


def test_operator_add_list_revoke(tmp_path: Path) -> None:
    sd = str(tmp_path / "gw")
    assert _cjb("gateway", "init", "--state-dir", sd)[0] == 0
    code, out = _cjb("gateway", "operator", "add", "--state-dir", sd, "alice")
    assert code == 0, out
    token = out.strip().splitlines()[-1]
    assert token.startswith("cjbop.alice.") and len(token) > 40
    code, out = _cjb("gateway", "operator", "add", "--state-dir", sd, "alice")
    assert code == 1 and "exists" in out
    code, out = _cjb("gateway", "operator", "add", "--state-dir", sd, "Bad Name")
    assert code == 1 and "operator name" in out
    with Registry.open(tmp_path / "gw/api/registry.sqlite3") as reg:
        row = reg.operator("alice")
        assert row is not None
        # Only a salted hash is stored: the secret appears nowhere in the registry file.
        secret = token.split(".", 2)[2]
        assert secret.encode() not in (tmp_path / "gw/api/registry.sqlite3").read_bytes()
        assert len(row.hash) == 32 and len(row.salt) == 16
    code, out = _cjb("gateway", "operator", "list", "--state-dir", sd)
    assert code == 0 and "alice" in out
    code, out = _cjb("gateway", "operator", "revoke", "--state-dir", sd, "alice")
    assert code == 0, out
    code, out = _cjb("gateway", "operator", "revoke", "--state-dir", sd, "alice")
    assert code == 1 and "already revoked" in out


def test_migrate_single_directory_state(tmp_path: Path) -> None:
    """An old state dir (everything in one directory, a plaintext operator.token) is split;
    the command says what moved where and the old token keeps working as 'migrated'."""
    from cjb.gateway.control.operators import Verifier, split_token
    from cjb.gateway.control.statedir import StateDir, init_state_dir

    new = init_state_dir(tmp_path / "new", ["localhost"], "x:1")
    old = tmp_path / "old"
    (old / "ca").mkdir(parents=True)
    (old / "tls").mkdir()
    (old / "wireguard").mkdir()
    for src, dst in (
        (new.ca_key, "ca/ca.key"), (new.ca_cert, "ca/ca.pem"), (new.server_key, "tls/server.key"),
        (new.server_cert, "tls/server.pem"), (new.wg_private, "wireguard/private.key"),
        (new.wg_public, "wireguard/public.key"), (new.settings, "gateway.toml"),
        (new.registry, "registry.sqlite3"),
    ):  # fmt: skip
        (old / dst).write_bytes(src.read_bytes())
    (old / "operator.token").write_text("old-static-token\n")
    code, out = _cjb("gateway", "device", "list", "--state-dir", str(old))
    assert code == 1 and "migrate-state" in out
    code, out = _cjb("gateway", "migrate-state", "--state-dir", str(old))
    assert code == 0, out
    layout = StateDir(old)
    assert f"moved {old / 'ca/ca.key'} -> {layout.ca_key}" in out
    assert f"-> {layout.wg_private}" in out and "operator credential 'migrated'" in out
    assert not (old / "operator.token").exists() and not (old / "ca").exists()
    assert layout.ca_key.read_bytes() == new.ca_key.read_bytes()
    with Registry.open(layout.registry) as reg:
        row = reg.operator("migrated")
        assert row is not None
        token = "cjbop.migrated.old-static-token"  # noqa: S105 - the test fixture
        assert split_token(token) == ("migrated", "old-static-token")
        assert Verifier().verify(token, (row.salt, row.hash), 0.0)
    assert json.loads(layout.desired.read_text())["tunnels"] == []
    code, out = _cjb("gateway", "device", "list", "--state-dir", str(old))
    assert code == 0, out
