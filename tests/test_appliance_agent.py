"""The enrolled agent end to end: a real `cjb appliance run` process in a namespace, a fake
gateway (tests/test_appliance_control.py) over real TLS, real ARP probing, a real bridge,
VXLAN port and nftables WAN filter. Plus fast tests of the on-disk parts (keys, store).

    client ns  c0: 192.168.0.100/24   (holds the preferred service address)
        │ veth
    appl ns    lan0 ── br-lan 192.168.0.2/24 (made by the test, adopted by the agent)
               cjb-vx0 (the agent's tunnel port, on br-lan) ── wan0 (veth, fd00:b::2/64)
               fake gateway on 127.0.0.1:<port>, the agent process
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from cjb.appliance.keys import device_keys, fingerprint, load_factory, write_factory
from cjb.appliance.store import Store
from cjb.common.control.identity import ApplianceLayout
from tests.test_appliance_control import FakeGateway, default_config

SERIAL = "CJB-E2E-1"


# -- fast: identity, keys and the store ---------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_boot_keys_are_0600_and_stable_across_restarts(tmp_path: Path) -> None:
    keys = device_keys(tmp_path / "state")
    assert _mode(keys.wireguard_private_file) == 0o600
    assert _mode(keys.device_key_file) == 0o600
    again = device_keys(tmp_path / "state")
    assert again.wireguard_public_b64 == keys.wireguard_public_b64
    assert len(keys.wireguard_private_file.read_text().strip()) == 44  # `wg genkey` form
    csr = keys.csr_pem(SERIAL)
    assert csr.startswith("-----BEGIN CERTIFICATE REQUEST-----")


def test_factory_identity_round_trip_and_fingerprint_not_key(tmp_path: Path) -> None:
    layout = ApplianceLayout(tmp_path)
    key = ed25519.Ed25519PrivateKey.generate()
    write_factory(layout, SERIAL, key)
    assert _mode(layout.factory_key) == 0o600
    identity = load_factory(layout)
    assert identity.serial == SERIAL
    assert identity.fingerprint == fingerprint(identity.public_raw)
    assert identity.fingerprint.startswith("SHA256:")
    assert identity.public_b64 not in identity.fingerprint


def test_missing_identity_names_the_file_and_the_fix(tmp_path: Path) -> None:
    from cjb.appliance.keys import IdentityError

    with pytest.raises(IdentityError, match=r"factory/serial: no serial.*cjb image personalise"):
        load_factory(ApplianceLayout(tmp_path))


def test_store_round_trip_forget_and_torn_file(tmp_path: Path) -> None:
    from cjb.common.control.protocol import EnrollResponse

    store = Store(tmp_path)
    assert store.load() is None
    enrollment = EnrollResponse(
        device_certificate_pem="CERT", ca_certificate_pem="CA", config=default_config()
    )
    store.save(enrollment)
    assert _mode(tmp_path / "enrollment.json") == 0o600
    assert store.load() == enrollment
    (tmp_path / "device-cert.pem").unlink()  # a crash between the two writes
    assert store.load() == enrollment and store.cert_file.read_text() == "CERT"
    updated = store.save_config(enrollment, default_config().model_copy(update={"tenant": "t2"}))
    assert store.load() == updated
    (tmp_path / "enrollment.json").write_text('{"device_certificate_pem": ')  # torn
    assert store.load() is None  # unreadable: enroll again rather than crash
    store.forget()
    assert not any(tmp_path.glob("*.pem"))


class FakeLan:
    def __init__(self, addresses: list[str], router: str | None) -> None:
        self._addresses = {ipaddress.ip_interface(a) for a in addresses}
        self._router = ipaddress.IPv4Address(router) if router else None

    def addresses(self, ns: str | None, name: str) -> set[Any]:
        return set(self._addresses)

    def default_router(self, ns: str | None, dev: str | None = None) -> Any:
        return self._router


def test_lan_facts_from_the_bridge_and_overrides() -> None:
    from cjb.appliance.lan import LanError, preferred_address, read_lan

    plan = read_lan(FakeLan(["192.168.1.7/24", "fe80::1/64"], "192.168.1.1"), "br-lan")
    assert plan.prefix == ipaddress.IPv4Network("192.168.1.0/24")
    assert plan.router == ipaddress.IPv4Address("192.168.1.1")
    assert plan.own == (ipaddress.IPv4Address("192.168.1.7"),)
    assert preferred_address(plan.prefix, 100) == ipaddress.IPv4Address("192.168.1.100")
    assert preferred_address(plan.prefix, 300) is None  # outside a /24: start at the bottom
    lab = read_lan(FakeLan([], None), "br-lan", prefix=ipaddress.IPv4Network("10.9.0.0/24"))
    assert lab.prefix == ipaddress.IPv4Network("10.9.0.0/24") and lab.router is None
    with pytest.raises(LanError, match="br-lan has no IPv4 address yet"):
        read_lan(FakeLan(["fe80::1/64"], None), "br-lan")


def test_run_without_a_personalised_identity_says_what_to_do(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cjb.cli.appliance import appliance

    config = tmp_path / "appliance.json"
    config.write_text(json.dumps({"root": str(tmp_path), "state_dir": str(tmp_path / "run")}))
    result = CliRunner().invoke(appliance, ["run", "--config", str(config)])
    assert result.exit_code == 1
    assert "no serial; this unit was not personalised" in result.output
    assert "cjb image personalise" in result.output


def test_status_without_a_running_agent_says_so(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cjb.cli.appliance import appliance

    config = tmp_path / "appliance.json"
    config.write_text(json.dumps({"state_dir": str(tmp_path / "run")}))
    result = CliRunner().invoke(appliance, ["status", "--config", str(config)])
    assert result.exit_code == 1
    assert "is `cjb appliance run` running?" in result.output


# -- real: the agent process ---------------------------------------------------------------


@pytest.fixture
def appliance_ns() -> Iterator[str]:
    import tests.labkit as labkit

    labkit.require("nft", "ip")
    from cjb.common.netlink import (
        Bridge,
        Existing,
        Link,
        Namespace,
        NetworkSpec,
        Route,
        Veth,
        VethPeer,
        apply,
        remove,
    )
    from cjb.common.netlink.real import RealKernel

    prefix = f"cjbBg{secrets.token_hex(2)}-"
    client, appl = prefix + "client", prefix + "appl"
    off = (("ipv6.disable_ipv6", "1"),)
    spec = NetworkSpec(
        owner=f"test-agent-{prefix}",
        namespace_prefix=prefix,
        namespaces=(
            Namespace(
                client,
                (
                    Link(
                        "c0",
                        VethPeer(of="lan0"),
                        sysctls=off,
                        addresses=(ipaddress.ip_interface("192.168.0.100/24"),),
                    ),
                ),
                owned=True,
            ),
            Namespace(
                appl,
                (
                    Link("lo", Existing()),
                    Link(
                        "br-lan",
                        Bridge(),
                        sysctls=off,
                        addresses=(ipaddress.ip_interface("192.168.0.2/24"),),
                    ),
                    Link("lan0", Veth(peer="c0", peer_netns=client), master="br-lan", sysctls=off),
                    # No dummy module on every kernel: a veth pair stands in for the WAN.
                    Link(
                        "wan0",
                        Veth(peer="wan1"),
                        mtu=1600,  # room for VXLAN over IPv6 (+70) around 1500-byte frames
                        addresses=(ipaddress.ip_interface("fd00:b::2/64"),),
                    ),
                    Link("wan1", VethPeer(of="wan0"), mtu=1600),
                ),
                # A default route (any protocol will do): the agent reports its router.
                routes=(
                    Route(
                        ipaddress.IPv4Network("0.0.0.0/0"),
                        ipaddress.IPv4Address("192.168.0.1"),
                        "br-lan",
                    ),
                ),
                owned=True,
            ),
        ),
    )
    with RealKernel() as kernel:
        try:
            apply(kernel, spec)
            yield appl
        finally:
            remove(kernel, spec)
            assert not [n for n in kernel.namespaces() if n.startswith(prefix)]


class Agent:
    def __init__(self, ns: str, config: Path, log: Path) -> None:
        self.ns, self.config, self.log = ns, config, log
        self.status_file = Path(json.loads(config.read_text())["state_dir"]) / "status.json"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from cjb.common.netlink import netns

        with open(self.log, "ab") as out, netns(self.ns):
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cjb.cli",
                    "appliance",
                    "run",
                    "--config",
                    str(self.config),
                    "-v",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def wait_for(what: str, check: Callable[[], Any], agent: Agent, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert agent.proc is not None and agent.proc.poll() is None, (
            f"agent exited while waiting for {what}:\n{agent.log.read_text()[-3000:]}"
        )
        got = check()
        if got:
            return got
        time.sleep(0.2)
    status = agent.status_file.read_text() if agent.status_file.exists() else "(none)"
    raise AssertionError(
        f"timed out waiting for {what}; agent log:\n{agent.log.read_text()[-3000:]}\n"
        f"status: {status}"
    )


def _write_agent_config(config: Path, run_dir: Path, root: Path, **extra: object) -> None:
    """The agent's config for the end-to-end tests: plain VXLAN, short intervals."""
    config.write_text(
        json.dumps(
            {
                "bridge": "br-lan",
                "lan_ports": ["lan0"],
                "state_dir": str(run_dir),
                "check_interval": 0.5,
                "root": str(root),
                "wan": "wan0",
                "tunnel_builder": "plain-vxlan",
                "arp_probe_scale": 0.1,
                "backoff_base": 0.2,
                "backoff_cap": 1.0,
                **extra,
            }
        )
    )


def _agent_status(run_dir: Path) -> dict[str, Any]:
    """The agent's status file; {} while it is missing or half written."""
    try:
        data: dict[str, Any] = json.loads((run_dir / "status.json").read_text())
        return data
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


@pytest.mark.root
@pytest.mark.slow
def test_agent_enrolls_repairs_survives_restart_follows_config_and_reenrolls(
    appliance_ns: str, tmp_path: Path
) -> None:
    from cjb.appliance.wan_filter import TABLE_FAMILY, TABLE_NAME
    from cjb.common.netlink import netns, nft
    from cjb.common.netlink.real import RealKernel

    ns = appliance_ns
    identity_key = ed25519.Ed25519PrivateKey.generate()
    root = tmp_path / "root"
    layout = ApplianceLayout(root)
    write_factory(layout, SERIAL, identity_key)
    gw = FakeGateway(tmp_path, inventory={SERIAL: load_factory(layout).public_b64})
    with netns(ns):
        gw.start()  # listens on 127.0.0.1 inside the appliance's namespace
    layout.operator_ca.write_text(gw.ca.pem)
    layout.gateway_url.write_text(gw.url + "\n")
    run_dir = tmp_path / "run"
    config = tmp_path / "appliance.json"
    _write_agent_config(config, run_dir, root, http_timeout=3)
    agent = Agent(ns, config, tmp_path / "agent.log")
    state = layout.state_dir

    def status() -> dict[str, Any]:
        return _agent_status(run_dir)

    def port() -> Any:
        with RealKernel() as kernel:
            return kernel.links(ns).get("cjb-vx0")

    def tunnel_ok(vni: int) -> Callable[[], bool]:
        def check() -> bool:
            s, link = status(), port()
            return bool(
                s.get("phase") == "enrolled"
                and s.get("tunnel_on_bridge")
                and link is not None
                and link.master == "br-lan"
                and link.vxlan is not None
                and link.vxlan[0] == vni
            )

        return check

    try:
        # 1. First boot: probe, enroll, tunnel port on the bridge, WAN filter in place.
        agent.start()
        wait_for("enrollment and the tunnel port", tunnel_ok(101), agent)
        assert len(gw.enrollments) == 1
        lan = gw.enrollments[0].lan
        assert lan.prefix == ipaddress.IPv4Network("192.168.0.0/24")
        assert lan.router == ipaddress.IPv4Address("192.168.0.1")
        # .100 is taken by the client (it answers the probe): the next free one is reported.
        assert lan.service_address == ipaddress.IPv4Address("192.168.0.101")
        for name in ("wireguard.key", "device-key.pem", "enrollment.json"):
            assert _mode(state / name) == 0o600, name
        assert port().vxlan == (101, "fd00:b::2", "fd00:b::1", 4789)
        table = nft._nft(ns, ["list", "table", TABLE_FAMILY, TABLE_NAME])
        assert "arp daddr ip 192.168.0.100" in table and "02:cc:00:00:00:01" in table
        # The discovery relay follows the tunnel: on, announcing the catalog.
        wait_for(
            "the discovery relay", lambda: status().get("discovery", "").startswith("on:"), agent
        )
        s = status()
        assert s["serial"] == SERIAL and s["tenant"] == "tenant1"
        assert s["factory_key_fingerprint"].startswith("SHA256:")
        screen = subprocess.run(
            [sys.executable, "-m", "cjb.cli", "appliance", "status", "--config", str(config)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for expected in (
            "(enrolled mode)",
            f"serial           {SERIAL}",
            f"factory key      {s['factory_key_fingerprint']}",
            "enrollment       enrolled, config version 1",
            "tenant           tenant1",
            "tunnel           cjb-vx0 up, on br-lan, vni 101",
            "heartbeats_ok",
            "filter_lan_only",
        ):
            assert expected in screen, (expected, screen)
        log_text = agent.log.read_text()
        assert (state / "wireguard.key").read_text().strip() not in log_text

        # 2. Someone deletes the tunnel port: it comes back on the bridge by itself.
        subprocess.run(["ip", "-n", ns, "link", "del", "cjb-vx0"], check=True)
        wait_for("the tunnel port to be re-created", tunnel_ok(101), agent, timeout=10)

        # 3. Restart: no new enrollment; it heartbeats with the persisted certificate.
        beats = len(gw.heartbeats)
        agent.stop()
        agent.start()
        wait_for("a heartbeat after restart", lambda: len(gw.heartbeats) > beats, agent)
        assert len(gw.enrollments) == 1
        assert gw.heartbeats[-1].serial == SERIAL and gw.heartbeats[-1].config_version == 1
        lan_after_restart = gw.heartbeats[-1].lan
        assert lan_after_restart is not None
        assert lan_after_restart.service_address == ipaddress.IPv4Address("192.168.0.100")

        # 3b. WAN cut (the gateway's port rejects): heartbeats fail, the tunnel is rebuilt
        # after 3 misses, the enrollment is kept; restored: heartbeats succeed again.
        cut = (
            "table inet cjbBcut {\n chain out {\n  type filter hook output priority 0;\n"
            f"  tcp dport {gw.port} reject with tcp reset\n }}\n}}\n"
        )
        subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "-f", "-"], input=cut, text=True, check=True
        )
        wait_for(
            "3 failed heartbeats and a reconnect",
            lambda: status().get("counters", {}).get("reconnects", 0) >= 1,
            agent,
            timeout=25,
        )
        assert "gateway unreachable (connection refused)" in status()["status_line"]
        assert status()["phase"] == "enrolled" and port() is not None
        subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "cjbBcut"], check=True
        )
        beats = len(gw.heartbeats)
        wait_for("heartbeats after the WAN is back", lambda: len(gw.heartbeats) > beats, agent)
        wait_for(
            "the status to recover",
            lambda: "last heartbeat ok" in status().get("status_line", ""),
            agent,
            5,
        )
        assert len(gw.enrollments) == 1

        # 4. The gateway bumps the config (new VNI): fetched and applied at the next heartbeat.
        assert gw.config is not None
        gw.bump(tunnel=gw.config.tunnel.model_copy(update={"vni": 202}))
        wait_for("config version 2 with VNI 202", tunnel_ok(202), agent, timeout=20)
        wait_for("status config version 2", lambda: status().get("config_version") == 2, agent, 5)
        assert gw.config_fetches >= 1

        # 5. Revoked: the next heartbeat gets 403; it forgets, tears down, and re-enrolls,
        # which the gateway refuses while the revocation stands.
        gw.revoked.add(SERIAL)
        wait_for(
            "the revocation to be noticed",
            lambda: "device-revoked" in gw.refusals,
            agent,
            timeout=20,
        )
        wait_for("the tunnel to be removed", lambda: port() is None, agent, timeout=10)
        assert not (state / "enrollment.json").exists()
        assert status()["phase"] != "enrolled"
        assert "device-revoked" in status()["status_line"] or status()["phase"] != "enrolled"

        # 6. Revocation lifted: enrolls again by itself (backoff capped at 1 s here).
        gw.revoked.clear()
        wait_for("re-enrollment", tunnel_ok(202), agent, timeout=20)
        assert len(gw.enrollments) == 2
        assert status()["counters"]["reenrollments"] == 1
    finally:
        agent.stop()
        gw.stop()


# -- real: against the real gateway control plane (cjb gateway init/import/serve) ---------


def _cli(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "cjb.cli", *args], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"cjb {' '.join(args[:3])}: {proc.stderr}"
    return proc.stdout


@pytest.mark.root
@pytest.mark.slow
def test_agent_enrolls_with_the_real_gateway_restarts_without_enrolling_and_obeys_revoke(
    appliance_ns: str, tmp_path: Path
) -> None:
    pytest.importorskip("aiohttp", reason="the gateway API needs the gateway extra")
    from cjb.appliance.keys import b64
    from cjb.common.control.protocol import InventoryRecord
    from cjb.common.netlink import netns
    from cjb.common.netlink.real import RealKernel
    from cjb.gateway.control.statedir import StateDir

    ns = appliance_ns
    gw_state = tmp_path / "gw"
    port = 20000 + secrets.randbelow(20000)
    _cli(
        "gateway", "init", "--state-dir", str(gw_state), "--san", "127.0.0.1",
        "--endpoint", "[fd00:b::1]:51820", "--listen", "127.0.0.1", "--port", str(port),
    )  # fmt: skip
    settings = StateDir(gw_state).settings
    settings.write_text(
        settings.read_text().replace("heartbeat_seconds = 30", "heartbeat_seconds = 5")
    )
    root = tmp_path / "root"
    layout = ApplianceLayout(root)
    key = ed25519.Ed25519PrivateKey.generate()
    write_factory(layout, SERIAL, key)
    layout.operator_ca.write_bytes(StateDir(gw_state).ca_cert.read_bytes())
    layout.gateway_url.write_text(f"https://127.0.0.1:{port}\n")
    record = InventoryRecord(
        serial=SERIAL, factory_public_key=b64(key.public_key().public_bytes_raw()), tenant="t1"
    )
    (tmp_path / "inventory.jsonl").write_text(record.model_dump_json() + "\n")
    _cli(
        "gateway",
        "device",
        "import",
        "--state-dir",
        str(gw_state),
        str(tmp_path / "inventory.jsonl"),
    )

    run_dir = tmp_path / "run"
    config = tmp_path / "appliance.json"
    _write_agent_config(config, run_dir, root)
    server_log = open(tmp_path / "serve.log", "ab")  # noqa: SIM115 (closed in finally)
    with netns(ns):
        server = subprocess.Popen(
            [sys.executable, "-m", "cjb.cli", "gateway", "serve", "--state-dir", str(gw_state)],
            stdin=subprocess.DEVNULL,
            stdout=server_log,
            stderr=server_log,
        )
    agent = Agent(ns, config, tmp_path / "agent.log")

    def status() -> dict[str, Any]:
        return _agent_status(run_dir)

    def port_link() -> Any:
        with RealKernel() as kernel:
            return kernel.links(ns).get("cjb-vx0")

    def enrolled() -> bool:
        s, link = status(), port_link()
        return bool(s.get("phase") == "enrolled" and link is not None and link.master == "br-lan")

    try:
        started = time.monotonic()
        agent.start()
        wait_for("enrollment with the real gateway", enrolled, agent)
        took = time.monotonic() - started
        s = status()
        assert s["tenant"] == "t1" and s["service_ipv4"] == "192.168.0.101"
        assert port_link().vxlan[0] == s["vni"]
        shown = _cli("gateway", "device", "show", "--state-dir", str(gw_state), SERIAL)
        assert "enrolled" in shown

        agent.stop()
        agent.start()
        wait_for(
            "a heartbeat accepted after restart",
            lambda: (
                status().get("counters", {}).get("heartbeats_ok", 0) >= 1
                and status().get("pid") == (agent.proc.pid if agent.proc else None)
            ),
            agent,
        )
        assert status()["counters"]["enroll_attempts"] == 0  # no second enrollment

        _cli("gateway", "device", "revoke", "--state-dir", str(gw_state), SERIAL)
        wait_for("the tunnel to come down after revocation", lambda: port_link() is None, agent, 20)
        wait_for(
            "the refusal in the status line",
            lambda: (
                "waiting" in status().get("status_line", "")
                and "refused" in status().get("status_line", "")
            ),
            agent,
            10,
        )
        assert not (layout.state_dir / "enrollment.json").exists()
        print(f"enrollment with the real gateway took {took:.1f} s (agent start to tunnel)")
    finally:
        agent.stop()
        server.terminate()
        server.wait(timeout=15)
        server_log.close()
