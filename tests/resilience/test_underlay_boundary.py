"""The trust boundary on the enrolled lab: VXLAN only from inside WireGuard, and a VNI
binding that survives another program flushing nftables.

One lab for the module: 2 appliances enrolled over HTTPS, VXLAN inside WireGuard. Each
test runs on the userspace translator and on the kernel fast path (`fast_path: kernel` in
the gateway's config, switched by rewriting it; the data plane reloads it).

* An internet attacker (the lab's "internet" namespace, a source it does not own bound
  with IPV6_FREEBIND) sends plain VXLAN to the gateway's underlay address with the
  appliance's overlay address as source and that tenant's VNI, and to an appliance's WAN
  address with the gateway's overlay address as source. Without the guard and the input
  policy, 30 of 30 reach the service link and the customer LAN (measured on this lab with
  both removed); here: 0 on the service host's tenant links and on the site's LAN, every
  packet counted by the tc guard at the receiving end.
* `nft flush ruleset` in the gateway (data plane paused, so nothing can restore the table
  during the attack), then appliance 2 sends tenant 1's VNI through its own tunnel: 0
  frames reach tenant 1, the guard counts them as spoofed for tenant 1. Then the ruleset is
  flushed again with everything running, at the gateway and at appliance 1: the tables are
  back and pages are served within RECOVER_WITHIN.
* The gateway's underlay input: the API's port answers the internet, another port is
  dropped silently and counted.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import labkit
import pytest
from labkit import Capture
from reskit import Report, Tally

from cjb.common.control.service_macs import SERVICE_LINK, service_mac
from cjb.common.netlink.nft import tables
from cjb.common.packet.checksum import internet_checksum
from cjb.lab.demo import curl
from cjb.lab.state import LabState
from cjb.lab.topology import API_PORT, GATEWAY_UNDERLAY, tenant_name, underlay_addr

pytestmark = [pytest.mark.root, pytest.mark.slow]

TENANTS = 2
FORGED = 30
RECOVER_WITHIN = 10.0  # seconds: pages served again after a ruleset flush
GATEWAY_OVERLAY = "fd63:6a62:77::1"  # gateway/control/settings.py default
LAN_MAC = "02:00:5e:00:01:0a"

# Runs in a lab namespace: VXLAN (RFC 7348 §5) from a source address the sender need not
# own (IPV6_FREEBIND), as an attacker who forges the outer source would.
FORGE = """
import socket, sys
src, dst, vni = sys.argv[1:4]
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, 78, 1)  # IPV6_FREEBIND
s.bind((src, 0))
vxlan = bytes([0x08, 0, 0, 0]) + int(vni).to_bytes(3, "big") + b"\\x00"
for frame in sys.argv[4:]:
    s.sendto(vxlan + bytes.fromhex(frame), (dst, 4789))
"""


def tags(prefix: bytes, n: int = FORGED) -> list[bytes]:
    """One payload per forged frame, so each frame's fate is seen on its own."""
    return [prefix + b"#%03d." % i for i in range(n)]


def inner_frame(src: str, dst: str, dst_mac: str, payload: bytes) -> bytes:
    """Ethernet + IPv4 + UDP: what a LAN client or the service would put on the segment."""
    udp = struct.pack("!HHHH", 4000, 9999, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )  # fmt: skip
    header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
    ether = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(LAN_MAC.replace(":", ""))
    return ether + b"\x08\x00" + header + udp


def forge(ns: str, src: str, dst: str, vni: int, frames: list[bytes]) -> None:
    run = labkit.python_in(ns, FORGE, src, dst, str(vni), *(f.hex() for f in frames))
    assert run.returncode == 0, run.stderr


@pytest.fixture(scope="module")
def lab() -> Iterator[LabState]:
    pytest.importorskip("cjb.common.vxlan_guard")
    with labkit.wireguard_lab(TENANTS, "curl") as state:
        yield state


def _wait_for(check: Callable[[], bool], within: float, what: str) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < within, f"{what} not within {within}s"
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.fixture(params=["userspace", "kernel"])
def mode(request: pytest.FixtureRequest, lab: LabState) -> str:
    """The gateway's fast path for this test, set in its config file (the data plane
    reloads it within a second)."""
    wanted: str = request.param
    path = lab.run_dir / "gateway.json"
    cfg = json.loads(path.read_text())
    if cfg.get("fast_path") != wanted:  # absent: the product default (kernel); set it
        cfg["fast_path"] = wanted
        path.write_text(json.dumps(cfg, indent=2) + "\n")

    def ready() -> bool:
        tenants = labkit.gateway_status(lab).get("tenants") or {}
        return len(tenants) == TENANTS and all(
            t["fast_path"]["mode"] == wanted and t["state"] == "running" for t in tenants.values()
        )

    _wait_for(ready, 15, f"fast path {wanted}")
    errors = {n: t["fast_path"]["error"] for n, t in labkit.gateway_status(lab)["tenants"].items()}
    assert not any(errors.values()), errors
    _wait_pages(lab, RECOVER_WITHIN)
    return wanted


def _pages_ok(lab: LabState) -> bool:
    return all(
        curl(lab.namespaces[f"site{k}"], "http://192.168.0.100/", 1).tenant == tenant_name(k)
        for k in range(1, TENANTS + 1)
    )


def _wait_pages(lab: LabState, within: float) -> float:
    return _wait_for(lambda: _pages_ok(lab), within, "every site served its own page")


def _tenant(lab: LabState, k: int) -> dict[str, Any]:
    t: dict[str, Any] = labkit.fresh_status(lab)["tenants"][tenant_name(k)]
    return t


def _gateway_guard(lab: LabState) -> dict[str, int]:
    guard = labkit.fresh_status(lab)["vxlan_guard"]
    assert guard["active"], guard
    drops: dict[str, int] = guard["drops"]
    return drops


def _appliance_counters(lab: LabState, k: int) -> dict[str, int]:
    """The agent's status counters after its next rewrite."""
    path = lab.run_dir / f"appliance{k}" / "status.json"
    before = path.stat().st_mtime_ns
    _wait_for(lambda: path.stat().st_mtime_ns != before, 5, f"appliance{k} status")
    status = json.loads(path.read_text())
    assert status["vxlan_guard"] == "active", status["vxlan_guard"]
    counters: dict[str, int] = status["counters"]
    return counters


class Watch:
    """Captures where tenant K's segment begins and ends: its VXLAN port at the gateway,
    its service-host links, the appliance's VXLAN port and the site's LAN. Counts frames
    carrying the nonce."""

    def __init__(self, lab: LabState, k: int, nonce: bytes) -> None:
        self.nonce = nonce
        self.frames: dict[str, list[bytes]] = {}
        self.caps = {
            "gateway": Capture(lab.namespaces["gateway"], [f"vx-tenant{k}"]),
            "service": Capture(lab.namespaces["service"], [f"tenant{k}", f"n-tenant{k}"]),
            f"appliance{k}": Capture(lab.namespaces[f"appliance{k}"], ["cjb-vx0"]),
            f"site{k}": Capture(lab.namespaces[f"site{k}"], ["eth0"]),
        }

    def delivered(self, settle: float = 1.0) -> dict[str, int]:
        time.sleep(settle)  # frames in flight through the worker or the bridge
        out = {}
        for where, cap in self.caps.items():
            for link, frames in cap.drain().items():
                self.frames[f"{where}/{link}"] = [f for f in frames if self.nonce in f]
                out[f"{where}/{link}"] = len(self.frames[f"{where}/{link}"])
            cap.close()
        return out

    def kept_out(
        self, sent: list[bytes], kept: Tally, what: str, skip: tuple[str, ...] = ()
    ) -> Tally:
        """Each forged frame (by its tag) counted: seen on none of the links, or lost."""
        for tag in sent:
            seen = [link for link, fs in self.frames.items() if link not in skip
                    and any(tag in f for f in fs)]  # fmt: skip
            kept.add(not seen, f"{what} on {'+'.join(seen)}")
        return kept


def test_forged_vxlan_from_internet(lab: LabState, mode: str, report: Report) -> None:
    internet = lab.namespaces["internet"]
    t1 = _tenant(lab, 1)
    vni, overlay = t1["vni"], t1["appliance"]
    nonce = f"CJBFORGE{secrets.token_hex(4)}".encode()
    guard_before = _gateway_guard(lab)
    appliance_before = _appliance_counters(lab, 1)

    watch = Watch(lab, 1, nonce)
    # Toward the gateway: the appliance's overlay source, tenant 1's VNI, a frame the
    # translator would carry to the service (unicast to the service address's MAC).
    gw_tags = tags(nonce + b"-gw")
    to_service = [
        inner_frame("192.168.0.10", "192.168.0.100", service_mac(vni, SERVICE_LINK), t)
        for t in gw_tags
    ]
    forge(internet, overlay, str(GATEWAY_UNDERLAY), vni, to_service)
    # Toward appliance 1's WAN address: the gateway's overlay source, a broadcast the
    # bridge would flood onto the customer LAN.
    ap_tags = tags(nonce + b"-ap")
    to_lan = [inner_frame("192.168.0.100", "192.168.0.10", "ff:ff:ff:ff:ff:ff", t) for t in ap_tags]
    forge(internet, GATEWAY_OVERLAY, str(underlay_addr(1, 2)), vni, to_lan)
    delivered = watch.delivered()
    kept_gw = watch.kept_out(gw_tags, Tally(), "reached")
    kept_ap = watch.kept_out(ap_tags, Tally(), "reached")

    guard_after = _gateway_guard(lab)
    appliance_after = _appliance_counters(lab, 1)
    gateway_drops = guard_after["from_underlay"] - guard_before["from_underlay"]
    appliance_drops = (
        appliance_after["guard_from_underlay"] - appliance_before["guard_from_underlay"]
    )
    report(
        "forged-vxlan-gateway", *kept_gw.counts,
        f"{mode}: plain VXLAN from the internet, appliance overlay source forged; tc guard "
        f"counted {gateway_drops} from the underlay {kept_gw.lost_note()}".rstrip(),
        means="forged frames to the gateway seen on none of tenant1's links (its VXLAN port "
        "at the gateway, the service links, appliance1's VXLAN port, site1's LAN)",
    )  # fmt: skip
    report(
        "forged-vxlan-appliance", *kept_ap.counts,
        f"{mode}: plain VXLAN from the internet to appliance1's WAN, gateway overlay source "
        f"forged; appliance guard counted {appliance_drops} {kept_ap.lost_note()}".rstrip(),
        means="forged frames to appliance1's WAN seen on none of tenant1's links (the "
        "appliance's VXLAN port, site1's LAN, the gateway's VXLAN port, the service links)",
    )  # fmt: skip
    assert delivered == dict.fromkeys(delivered, 0), delivered
    assert gateway_drops == FORGED, (guard_before, guard_after)
    assert appliance_drops == FORGED, (appliance_before, appliance_after)
    _wait_pages(lab, RECOVER_WITHIN)  # and the real tunnels still carry pages


def _process(lab: LabState, *argv_part: str) -> int:
    for p in lab.processes:
        if all(part in p.argv for part in argv_part):
            return p.pid
    raise AssertionError(f"no lab process with {argv_part}")


def test_nft_flush_keeps_the_binding(lab: LabState, mode: str, report: Report) -> None:
    gw_ns = lab.namespaces["gateway"]
    t1, t2 = _tenant(lab, 1), _tenant(lab, 2)
    nonce = f"CJBFLUSH{secrets.token_hex(4)}".encode()
    spoofed_before = t1["vni_binding"]["vni_spoofed"]
    dataplane = _process(lab, "gateway", "run")

    # 1. The ruleset is gone and nothing can put it back (the data plane is paused):
    # appliance 2 sends tenant 1's VNI from its own overlay address, through its tunnel.
    watch = Watch(lab, 1, nonce)
    os.kill(dataplane, signal.SIGSTOP)
    try:
        labkit.run_in(gw_ns, ["nft", "flush", "ruleset"])
        assert tables(gw_ns) == set(), "the flush left tables behind"
        spoof_tags = tags(nonce + b"-vni")
        frames = [
            inner_frame("192.168.0.10", "192.168.0.100", service_mac(t1["vni"], SERVICE_LINK), t)
            for t in spoof_tags
        ]
        forge(lab.namespaces["appliance2"], t2["appliance"], GATEWAY_OVERLAY, t1["vni"], frames)
        time.sleep(0.5)
        still_flushed = tables(gw_ns) == set()
    finally:
        os.kill(dataplane, signal.SIGCONT)
    resumed = time.monotonic()
    # The worker was paused too: what got into tenant 1's port reaches the service now.
    delivered = watch.delivered(settle=2.0)
    kept = watch.kept_out(spoof_tags, Tally(), "spoofed VNI")
    assert still_flushed, "something restored the table during the attack: not a test of it"
    table_back = _wait_for(lambda: "cjb_gw" in tables(gw_ns), RECOVER_WITHIN, "gateway table")
    pages_back = _wait_pages(lab, RECOVER_WITHIN)
    spoofed = _tenant(lab, 1)["vni_binding"]["vni_spoofed"] - spoofed_before

    # 2. A flush with everything running, at the gateway, then at appliance 1.
    flushed = time.monotonic()
    labkit.run_in(gw_ns, ["nft", "flush", "ruleset"])
    gw_table = _wait_for(lambda: "cjb_gw" in tables(gw_ns), RECOVER_WITHIN, "gateway table")
    gw_pages = _wait_pages(lab, RECOVER_WITHIN - (time.monotonic() - flushed))
    gw_recovery = time.monotonic() - flushed

    # 3. Appliance 1's ruleset flushed with its agent paused, then forged VXLAN from the
    # internet to its WAN; then a flush with the agent running.
    ap_ns = lab.namespaces["appliance1"]
    agent = _process(lab, "appliance", "run", str(lab.run_dir / "appliance1.json"))
    ap_watch = Watch(lab, 1, nonce + b"-ap")
    ap_tags = tags(nonce + b"-ap")
    to_lan = [inner_frame("192.168.0.100", "192.168.0.10", "ff:ff:ff:ff:ff:ff", t) for t in ap_tags]
    os.kill(agent, signal.SIGSTOP)
    try:
        labkit.run_in(ap_ns, ["nft", "flush", "ruleset"])
        wan = str(underlay_addr(1, 2))
        forge(lab.namespaces["internet"], GATEWAY_OVERLAY, wan, t1["vni"], to_lan)
        ap_delivered = ap_watch.delivered()
        del ap_delivered["gateway/vx-tenant1"]  # the attack went to the appliance
        ap_watch.kept_out(ap_tags, kept, "to appliance1's WAN", skip=("gateway/vx-tenant1",))
        ap_still_flushed = tables(ap_ns) == set()
    finally:
        os.kill(agent, signal.SIGCONT)
    assert ap_still_flushed, "something restored the appliance's tables during the attack"
    report(
        "nft-flush-binding", *kept.counts,
        f"{mode}: gateway's guard counted spoofed {spoofed}; after a flush with everything "
        f"running its table was back in {gw_table:.1f}s, pages in {gw_recovery:.1f}s "
        f"{kept.lost_note()}".rstrip(),
        means="forged frames sent while the ruleset was flushed and nothing could restore it "
        "(appliance2 -> tenant1's VNI at the gateway; internet -> appliance1's WAN) seen on "
        "none of tenant1's links",
    )  # fmt: skip
    wanted = {"cjb_wan", "cjb_wan_in"}
    _wait_for(lambda: wanted <= tables(ap_ns), RECOVER_WITHIN, "appliance tables")
    _wait_pages(lab, RECOVER_WITHIN)
    flushed = time.monotonic()
    labkit.run_in(ap_ns, ["nft", "flush", "ruleset"])
    ap_tables = _wait_for(lambda: wanted <= tables(ap_ns), RECOVER_WITHIN, "appliance tables")
    _wait_pages(lab, RECOVER_WITHIN - (time.monotonic() - flushed))
    ap_recovery = time.monotonic() - flushed

    assert delivered == dict.fromkeys(delivered, 0), delivered
    assert ap_delivered == dict.fromkeys(ap_delivered, 0), ap_delivered
    assert spoofed == FORGED, f"the guard counted {spoofed} of {FORGED} forged VNIs"
    # The restore itself: within about a second of the data plane running again.
    assert table_back < 2.5, f"gateway table back {table_back:.1f}s after resuming"
    assert time.monotonic() - resumed < RECOVER_WITHIN
    assert pages_back < RECOVER_WITHIN
    assert gw_table < 2.5 and gw_pages < RECOVER_WITHIN and gw_recovery < RECOVER_WITHIN
    assert ap_recovery < RECOVER_WITHIN, (
        f"appliance pages back after {ap_recovery:.1f}s (tables {ap_tables:.1f}s)"
    )
    # Counted drops everywhere they can be, and visible in status.
    assert re.search(r"VXLAN guard \(tc\): bound \d+", _render(lab))


def _render(lab: LabState) -> str:
    from cjb.gateway.dataplane.status import render

    return render(labkit.gateway_status(lab), lab.run_dir / "gateway" / "status.json")


PROBE = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("open")
except ConnectionRefusedError:
    print("refused")
except OSError:
    print("silent")
"""


def test_underlay_input_admits_the_api_and_drops_the_rest(lab: LabState) -> None:
    """From the internet: the API's port answers, any other port is dropped without an
    answer (not refused) and counted; the appliances' tunnels keep working meanwhile."""
    internet = lab.namespaces["internet"]

    def probe(port: int) -> str:
        run = labkit.python_in(internet, PROBE, str(GATEWAY_UNDERLAY), str(port), "1.5")
        return run.stdout.strip()

    before = labkit.fresh_status(lab)["host_input"]["input_dropped"]
    assert probe(API_PORT) == "open"
    assert probe(9) == "silent"  # nothing listens there: without the policy, "refused"
    assert labkit.fresh_status(lab)["host_input"]["input_dropped"] > before
    _wait_pages(lab, RECOVER_WITHIN)
