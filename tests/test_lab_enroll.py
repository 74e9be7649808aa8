"""The lab on the real path: appliances enroll over HTTPS, VXLAN inside WireGuard.

    siteK ── applianceK (agent: enroll, WireGuard wglRUNaK + VXLAN, br-lan)
                 │ wan0 ══ internet (IPv6 forwarding) ══ wan0
              gateway: `cjb gateway serve` (HTTPS API, registry)
                       `cjb gateway run`  (registry -> WireGuard peers, VXLAN, workers)
                       wglRUNg ── vx-tenantK ── worker ── sl-/nl-tenantK ══ service

One lab for the module (3 tenants, identical client IPs); the tests run in file order and
each leaves every tenant working, except the last (revocation), which ends tenant 3.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import labkit
import pytest

import cjb.lab.control as lab_control
from cjb.common.netlink import netns
from cjb.common.netlink.nft import counters, tables
from cjb.common.netlink.real import RealKernel
from cjb.common.wireguard import DeviceSpec, PeerSpec, WireGuard
from cjb.common.wireguard.userspace import _pids_of
from cjb.lab import enrolled as enrolled_lab
from cjb.lab import procs
from cjb.lab.control import down, up
from cjb.lab.demo import crossed, curl, run_demo
from cjb.lab.state import LabState, ProcessRecord
from cjb.lab.topology import LabNames, tenant_name, underlay_addr

pytestmark = [pytest.mark.root, pytest.mark.slow]

TENANTS = 3
BACK_WITHIN = 15.0  # seconds after a gateway restart
REVOKED_WITHIN = 10.0


@pytest.fixture(scope="module")
def lab() -> Iterator[LabState]:
    labkit.require("nft", "curl", "ping")
    if not os.path.isdir("/sys/module/wireguard"):
        labkit.require("wireguard-go")
    start = time.monotonic()
    state = up(TENANTS, log=lambda _m: None, transport="wireguard")
    print(f"lab up with {TENANTS} enrolled appliances in {time.monotonic() - start:.1f}s")
    try:
        yield state
    finally:
        remaining = down(log=lambda _m: None, only=state.run_id)
        assert not remaining, f"left behind: {remaining}"
        names = LabNames(state.run_id)
        for node in ["gateway"] + [f"appliance{k}" for k in range(1, TENANTS + 1)]:
            assert not _pids_of("wireguard-go", names.wg_ifname(node))


def _spawn_in(ns: str, argv: list[str]) -> subprocess.Popen[bytes]:
    with netns(ns):
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for(check: Callable[[], bool], within: float, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"{what} not met within {within}s"
        time.sleep(0.1)


def _wait_dead(pid: int) -> None:
    _wait_for(lambda: not procs.alive(pid), 10, f"process {pid} to exit")


def _appliance_status(state: LabState, k: int) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((state.run_dir / f"appliance{k}/status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data


def _cli_ok(*args: str) -> None:
    proc = subprocess.run(lab_control.cli_argv(*args), capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def _names(state: LabState) -> LabNames:
    return LabNames(state.run_id)


def _page(state: LabState, k: int, timeout: float = 2) -> str | None:
    return curl(state.namespaces[f"site{k}"], "http://192.168.0.100/", timeout).tenant


def _wait_pages(state: LabState, tenants: list[int], within: float) -> float:
    """Seconds until every tenant in `tenants` gets its own page; fails on a foreign page."""
    start = time.monotonic()
    pending = set(tenants)
    while pending:
        for k in sorted(pending):
            got = _page(state, k, timeout=1)
            assert got in (None, tenant_name(k)), f"site{k} received {got}'s page"
            if got == tenant_name(k):
                pending.discard(k)
        elapsed = time.monotonic() - start
        assert elapsed < within, f"tenants {sorted(pending)} not back within {within}s"
    return time.monotonic() - start


def _registry(state: LabState):  # type: ignore[no-untyped-def]
    from cjb.gateway.control.registry import Registry
    from cjb.gateway.control.statedir import StateDir

    return Registry.open(StateDir(enrolled_lab.gateway_state_dir(state.run_dir)).registry)


def _gateway_links(state: LabState) -> dict[str, str | None]:
    with RealKernel() as kernel:
        return {n: s.alias for n, s in kernel.links(state.namespaces["gateway"]).items()}


def test_fig7_through_enrolled_wireguard(lab: LabState) -> None:
    rows = run_demo(lab)
    assert crossed(rows) == []
    for row in rows:
        assert row.translated.tenant == row.tenant, row.translated.detail
        assert row.native.tenant == row.tenant, row.native.detail
        # ... from the tenant's own interface of each path (X-CJB-Interface, X-CJB-Path).
        assert row.ok, (row.translated, row.native)
    status = labkit.fresh_status(lab)
    assert status["transport"] == "wireguard"
    for k in range(1, TENANTS + 1):
        wg = status["tenants"][tenant_name(k)]["wireguard"]
        assert wg["up"] is True and wg["rx_bytes"] > 0, wg
    with _registry(lab) as reg:
        assert {d.state for d in reg.devices()} == {"enrolled"}


def test_no_wireguard_private_key_in_logs_or_status(lab: LabState) -> None:
    run = lab.run_dir
    key_files = [run / "gateway-state/dataplane/wireguard/private.key"] + [
        enrolled_lab.appliance_root(run, k) / "var/lib/cjb/wireguard.key"
        for k in range(1, TENANTS + 1)
    ]
    for key_file in key_files:
        assert key_file.stat().st_mode & 0o077 == 0, f"{key_file} is readable by others"
    keys = [f.read_text().strip() for f in key_files]
    needles = keys + [base64.b64decode(k).hex() for k in keys]
    texts = [p.read_text(errors="replace") for p in (run / "logs").iterdir()]
    texts += [p.read_text() for p in run.rglob("status.json")]
    texts += [(run / "gateway.json").read_text()]
    for text in texts:
        assert not any(n in text for n in needles)


def test_lab_api_runs_as_its_own_user(lab: LabState) -> None:
    """The API process runs as the lab's API uid and cannot read the data plane's key; the
    data plane's view of the registry is the export, readable without the registry."""
    uid = enrolled_lab.api_uid()
    if uid is None:
        pytest.skip("no free uid for the lab's API user here")
    api = [p for p in lab.processes if "serve" in p.argv and p.node == "gateway"]
    assert len(api) == 1
    status = Path(f"/proc/{api[0].pid}/status").read_text()
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert uids == [str(uid)] * 4, uids
    state = enrolled_lab.gateway_state_dir(lab.run_dir)
    as_api = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "cat"]
    key = state / "dataplane/wireguard/private.key"
    denied = subprocess.run([*as_api, str(key)], capture_output=True, text=True, check=False)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    readable = subprocess.run(
        [*as_api, str(state / "api/ca/ca.key")], capture_output=True, check=False
    )
    assert readable.returncode == 0


def test_gateway_kill9_five_times_during_traffic(lab: LabState) -> None:
    names = _names(lab)
    expected_links = _gateway_links(lab)
    with _registry(lab) as reg:
        devices_before = reg.devices()
    gw_ns = lab.namespaces["gateway"]
    # Traffic all along: every site pings the service address (translated path).
    pingers = [
        _spawn_in(lab.namespaces[f"site{k}"], ["ping", "-i", "0.2", "192.168.0.100"])
        for k in range(1, TENANTS + 1)
    ]
    # Every frame on tenant K's service link must come from site K (the translator keeps
    # MAC addresses end to end; site K's MAC is 02:00:5e:00:K:0a).
    capture = labkit.Capture(
        lab.namespaces["service"], [tenant_name(k) for k in range(1, TENANTS + 1)]
    )
    seen: dict[str, int] = {}
    try:
        for _round in range(5):
            gateway = [p for p in lab.processes if p.node == "gateway" and procs.alive(p.pid)]
            assert len(gateway) == 2  # the API and the data plane
            for p in gateway:
                os.kill(p.pid, signal.SIGKILL)
            for p in gateway:
                _wait_dead(p.pid)
                lab.processes.remove(p)
            if _round in (2, 4):
                # The whole gateway dies, its WireGuard process too (a host or container
                # restart): the restarted data plane re-creates the interface and itself
                # re-handshakes with the appliances' last known endpoints.
                for pid in _pids_of("wireguard-go", names.wg_ifname("gateway")):
                    os.kill(pid, signal.SIGKILL)
                    _wait_dead(pid)
            time.sleep(1)  # down for a moment, traffic still flowing into the void
            for p in gateway:
                pid = procs.spawn(gw_ns, p.argv, Path(p.log))
                lab.processes.append(ProcessRecord(p.node, pid, p.argv, p.log))
            lab.save()
            took = _wait_pages(lab, list(range(1, TENANTS + 1)), BACK_WITHIN)
            print(f"round {_round + 1}: every tenant back {took:.1f}s after the restart")
            # Nothing stray: the same links, one WireGuard process, one nftables table.
            assert _gateway_links(lab) == expected_links
            assert len(_pids_of("wireguard-go", names.wg_ifname("gateway"))) == 1
            assert tables(gw_ns, "inet") == {"cjb_gw"}
            _check_sources(capture, seen)
    finally:
        for p in pingers:
            p.kill()
            p.wait()
        capture.close()
    assert all(seen.get(tenant_name(k), 0) > 0 for k in range(1, TENANTS + 1)), seen
    with _registry(lab) as reg:
        assert reg.integrity_check() == "ok"
        after = reg.devices()
    assert [(d.serial, d.state, d.wireguard_public_key) for d in after] == [
        (d.serial, d.state, d.wireguard_public_key) for d in devices_before
    ]
    assert crossed(run_demo(lab)) == []


def _check_sources(capture: labkit.Capture, seen: dict[str, int]) -> None:
    for ifname, frames in capture.drain().items():
        k = int(ifname.removeprefix("tenant"))
        for frame in frames:
            src = frame[6:12]
            if src[:4] == bytes.fromhex("02005e00") and src[5] == 0x0A:
                assert src[4] == k, f"a frame from site{src[4]} on {ifname}"
                seen[ifname] = seen.get(ifname, 0) + 1


def test_appliance_restart_does_not_reenroll(lab: LabState) -> None:
    serial = enrolled_lab.serial(_names(lab), 1)
    with _registry(lab) as reg:
        enrolled_before = [e for e in reg.audit_log(serial) if e.event == "enroll-ok"]
    (agent,) = [p for p in lab.processes if p.node == "appliance1" and procs.alive(p.pid)]
    wg_pid = _pids_of("wireguard-go", _names(lab).wg_ifname("appliance1"))
    os.kill(agent.pid, signal.SIGTERM)
    _wait_dead(agent.pid)
    lab.processes.remove(agent)
    env = {"CJB_WIREGUARD_IFNAME": _names(lab).wg_ifname("appliance1")}
    pid = procs.spawn(lab.namespaces["appliance1"], agent.argv, Path(agent.log), env)
    lab.processes.append(ProcessRecord(agent.node, pid, agent.argv, agent.log))
    lab.save()
    _wait_for(lambda: _appliance_status(lab, 1).get("pid") == pid, 20)
    _wait_pages(lab, [1], 20)
    status = _appliance_status(lab, 1)
    assert status["counters"]["enroll_attempts"] == 0 and status["phase"] == "enrolled"
    with _registry(lab) as reg:
        assert [e for e in reg.audit_log(serial) if e.event == "enroll-ok"] == enrolled_before
    # The tunnel was adopted, not rebuilt: the same WireGuard process carries it.
    assert _pids_of("wireguard-go", _names(lab).wg_ifname("appliance1")) == wg_pid


def test_appliance_wireguard_process_death_is_repaired(lab: LabState) -> None:
    ifname = _names(lab).wg_ifname("appliance2")
    (pid,) = _pids_of("wireguard-go", ifname)
    os.kill(pid, signal.SIGKILL)
    _wait_dead(pid)
    took = _wait_pages(lab, [2], BACK_WITHIN)
    print(f"tenant2 back {took:.1f}s after its appliance's wireguard-go was killed")
    assert len(_pids_of("wireguard-go", ifname)) == 1


def test_wan_cut_30s_recovers_by_itself(lab: LabState) -> None:
    internet = lab.namespaces["internet"]
    cut = (
        "table inet cjb_wancut {\n"
        "\tchain forward {\n\t\ttype filter hook forward priority -50; policy accept;\n"
        '\t\tiifname "ap2" drop\n\t\toifname "ap2" drop\n\t}\n}\n'
    )
    _wait_pages(lab, [2], 10)
    with netns(internet):
        subprocess.run(["nft", "-f", "-"], input=cut, text=True, check=True)
    try:
        assert _page(lab, 2, timeout=2) is None  # the cut is real
        time.sleep(30)
    finally:
        with netns(internet):
            subprocess.run(["nft", "delete", "table", "inet", "cjb_wancut"], check=True)
    took = _wait_pages(lab, [2], 60)
    print(f"tenant2 back {took:.1f}s after the WAN came back")
    assert _page(lab, 1) == tenant_name(1)


SEND_VXLAN = """
import socket, sys
src, dst, vni = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, 78, 1)  # IPV6_FREEBIND: a source we do not own
s.bind((src, 0))
frame = b"\\xff" * 6 + bytes.fromhex("02000000bb01") + b"\\x88\\xb5" + b"spoof".ljust(46)
vxlan = bytes([0x08, 0, 0, 0]) + vni.to_bytes(3, "big") + b"\\x00"  # RFC 7348 §5
for _ in range(5):
    s.sendto(vxlan + frame, (dst, 4789))
"""


def test_an_appliance_cannot_speak_for_another_tenant(lab: LabState) -> None:
    """One key -> one overlay address -> one VNI: WireGuard drops inner sources outside the
    peer's allowed IPs (cryptokey routing), the VNI binding drops foreign VNIs (the tc guard
    first, nftables behind it; the status sums both per tenant)."""
    status = labkit.fresh_status(lab)
    t1, t2 = status["tenants"]["tenant1"], status["tenants"]["tenant2"]
    ap1 = lab.namespaces["appliance1"]

    def binding() -> dict[str, int]:
        counts: dict[str, int] = labkit.fresh_status(lab)["tenants"]["tenant2"]["vni_binding"]
        return counts

    before = binding()
    # Appliance 1 claims tenant 2's overlay address: WireGuard drops it before any filter.
    run = labkit.python_in(ap1, SEND_VXLAN, t2["appliance"], "fd63:6a62:77::1", str(t2["vni"]))
    assert run.returncode == 0, run.stderr
    time.sleep(0.5)
    after = binding()
    assert after["vxlan_accepted"] == before["vxlan_accepted"]
    assert after["vni_spoofed"] == before["vni_spoofed"]
    # From its own address with tenant 2's VNI: it arrives, and the VNI binding drops it.
    run = labkit.python_in(ap1, SEND_VXLAN, t1["appliance"], "fd63:6a62:77::1", str(t2["vni"]))
    assert run.returncode == 0, run.stderr
    _wait_for(lambda: binding()["vni_spoofed"] >= before["vni_spoofed"] + 5, 3)
    assert binding()["vxlan_accepted"] == before["vxlan_accepted"]


def _handshake_counters(appliance: str) -> str:
    """WireGuard message types (first payload byte, whitepaper §5.4): 1 = handshake
    initiation, 2 = response; counted for one appliance's underlay address only."""
    return f"""table inet cjbtest_hs {{
\tcounter initiations {{ }}
\tcounter responses {{ }}
\tchain in {{
\t\ttype filter hook input priority 0; policy accept;
\t\tip6 saddr {appliance} udp dport 51820 @th,64,8 1 counter name initiations
\t}}
\tchain out {{
\t\ttype filter hook output priority 0; policy accept;
\t\tip6 daddr {appliance} udp sport 51820 @th,64,8 2 counter name responses
\t}}
}}
"""


def _force_handshake(lab: LabState, k: int, wg: WireGuard) -> None:
    """Drop appliance K's session with the gateway and re-add the peer with a 1 s
    keepalive: WireGuard sends a handshake initiation (message type 1) right away."""
    ns, ifname = lab.namespaces[f"appliance{k}"], _names(lab).wg_ifname(f"appliance{k}")
    device = wg.show(ns, ifname)
    assert device.private_key is not None and len(device.peers) == 1
    (peer,) = device.peers
    wg.apply(ns, ifname, DeviceSpec(device.private_key, None, ()))
    fresh = PeerSpec(peer.public_key, peer.allowed_ips, peer.endpoint, keepalive=1)
    wg.apply(ns, ifname, DeviceSpec(device.private_key, None, (fresh,)))


def test_revocation_under_traffic(lab: LabState) -> None:
    names = _names(lab)
    serial = enrolled_lab.serial(names, 3)
    gw_ns, wg_if = lab.namespaces["gateway"], names.wg_ifname("gateway")
    wg = WireGuard()
    with _registry(lab) as reg:
        key = reg.device(serial).wireguard_public_key
    assert wg.show(gw_ns, wg_if).peer(key) is not None
    with netns(gw_ns):
        subprocess.run(
            ["nft", "-f", "-"],
            input=_handshake_counters(str(underlay_addr(3, 2))),
            text=True,
            check=True,
        )
    pinger = _spawn_in(lab.namespaces["site3"], ["ping", "-i", "0.2", "192.168.0.100"])
    try:
        # Baseline: a forced handshake is answered while the device is enrolled.
        _force_handshake(lab, 3, wg)
        _wait_for(lambda: counters(gw_ns, "inet", "cjbtest_hs")["responses"][0] >= 1, 5)

        state_dir = str(enrolled_lab.gateway_state_dir(lab.run_dir))
        start = time.monotonic()
        _cli_ok("gateway", "device", "revoke", "--state-dir", state_dir, serial)
        _wait_for(lambda: wg.show(gw_ns, wg_if).peer(key) is None, REVOKED_WITHIN)
        took = time.monotonic() - start
        print(f"revoked peer gone from the gateway after {took:.1f}s")
        assert _page(lab, 3, timeout=2) is None

        # New handshakes are refused: initiations arrive, no response ever leaves.
        before = counters(gw_ns, "inet", "cjbtest_hs")
        ap_if = names.wg_ifname("appliance3")
        forced = wg.exists(lab.namespaces["appliance3"], ap_if)
        if forced:  # (the agent may already have taken its tunnel down: nothing to try)
            _force_handshake(lab, 3, wg)
        time.sleep(6)
        after = counters(gw_ns, "inet", "cjbtest_hs")
        assert after["responses"] == before["responses"]
        tried = after["initiations"][0] - before["initiations"][0]
        print(f"handshake initiations after revocation: {tried}, answered: 0")
        assert tried >= 1 or not forced
        assert wg.show(gw_ns, wg_if).peer(key) is None
        assert _page(lab, 3, timeout=2) is None
    finally:
        pinger.kill()
        pinger.wait()
        with netns(gw_ns):
            subprocess.run(["nft", "delete", "table", "inet", "cjbtest_hs"], check=False)
    # The other tenants are untouched.
    _wait_pages(lab, [1, 2], 10)
