"""The userspace IO modes without a kernel: config field, kernel objects (offloads per
mode), the vnet router's decisions, and switching a running gateway's mode."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path

import pytest

from cjb.common.netlink import Link, Namespace, NetworkSpec, SpecError, Veth, VethPeer, apply
from cjb.common.netlink.fake import FakeKernel
from cjb.gateway.dataplane.config import ConfigFileError, load
from cjb.gateway.dataplane.io_mode import ModeSwitchTimeout, set_userspace_io
from cjb.gateway.dataplane.kernel_spec import gateway_spec
from cjb.gateway.dataplane.lan_guard import LanGuard
from cjb.gateway.dataplane.router import Port, VnetFrameRouter
from cjb.gateway.dataplane.status import render
from cjb.gateway.xlat import Direction, Translator, XlatConfig
from cjb.gateway.xlat.gso import NO_VNET, VNET, VnetTranslator

CONFIG = {
    "underlay": {"address": "fd63:6a62::2", "device": "wan0"},
    "service_netns": "svc",
    "state_dir": "/nonexistent/cjb-test-gw",
    "tenants": {
        "acme": {"vni": 7, "appliance": "fd63:6a62:1::2"},
        "globex": {"vni": 8, "appliance": "fd63:6a62:2::2", "userspace_io": "packet"},
    },
}
MACS = bytes.fromhex("020000000002020000000001")


def _write(tmp_path: Path, data: Mapping[str, object]) -> Path:
    path = tmp_path / "gw.json"
    path.write_text(json.dumps(data))
    return path


def test_userspace_io_default_override_and_errors(tmp_path: Path) -> None:
    cfg = load(_write(tmp_path, {**CONFIG, "userspace_io": "packet-vnet"}))
    assert {t.name: t.userspace_io for t in cfg.tenants} == {
        "acme": "packet-vnet",
        "globex": "packet",
    }
    assert cfg.userspace_io == "packet-vnet"
    assert load(_write(tmp_path, CONFIG)).tenant("acme").userspace_io == "packet-vnet"
    with pytest.raises(ConfigFileError, match="userspace_io"):
        load(_write(tmp_path, {**CONFIG, "userspace_io": "tap"}))


def test_vnet_mode_turns_offloads_on_at_both_ends_of_every_tenant_link(tmp_path: Path) -> None:
    cfg = load(_write(tmp_path, {**CONFIG, "userspace_io": "packet-vnet"}))
    links = {(ns.name, link.name): link for ns in gateway_spec(cfg).namespaces for link in ns.links}
    acme = [links[k] for k in links if k[1].endswith("acme")] + [links[("svc", "acme")]]
    globex = [links[k] for k in links if k[1].endswith("globex")] + [links[("svc", "globex")]]
    assert acme and all(ln.offloads_on and not ln.offloads_off for ln in acme)
    assert globex and all(ln.offloads_off and not ln.offloads_on for ln in globex)


def test_fake_kernel_switches_offloads_back_on() -> None:
    def net(on: bool) -> NetworkSpec:
        link = Link("a", Veth("b"), offloads_on=on, offloads_off=not on)
        return NetworkSpec("t", (Namespace(None, (link, Link("b", VethPeer("a")))),))

    kernel = FakeKernel()
    apply(kernel, net(False))
    assert "offloads=off" in kernel.render()
    changes = apply(kernel, net(True))
    assert any("offloads on" in c for c in changes)
    assert "offloads=off" not in kernel.render().split("link a ")[1].splitlines()[0]
    assert apply(kernel, net(True)) == []  # idempotent
    with pytest.raises(SpecError, match="both set"):
        Link("a", Veth("b"), offloads_on=True, offloads_off=True)


class _Boom:
    reference = Translator(XlatConfig())
    config = reference.config

    def translate(self, *_args: object) -> None:
        raise RuntimeError("bug")


def test_vnet_router_native_frames_keep_their_vnet_header() -> None:
    router = VnetFrameRouter(VnetTranslator(Translator(XlatConfig())), native=True)
    gso = memoryview(VNET.pack(1, 4, 74, 1448, 54, 16))
    v6 = memoryview(MACS + b"\x86\xdd" + bytes(60))
    [(port, vnet, parts)] = router.route_vnet(Port.TUNNEL, gso, v6)
    assert port is Port.NATIVE and vnet is gso and parts == (v6,)
    [(port, vnet, _)] = router.route_vnet(Port.NATIVE, gso, v6)
    assert port is Port.TUNNEL and vnet is gso
    no_native = VnetFrameRouter(VnetTranslator(Translator(XlatConfig())), native=False)
    assert no_native.route_vnet(Port.TUNNEL, gso, v6) == []
    assert no_native.counters.drops["native-ipv6-no-link"] == 1


def test_vnet_router_counts_drops_and_survives_a_translator_bug() -> None:
    router = VnetFrameRouter(VnetTranslator(Translator(XlatConfig())), native=False)
    ipv4_on_service = memoryview(MACS + b"\x08\x00" + bytes(46))
    assert router.route_vnet(Port.SERVICE, memoryview(NO_VNET), ipv4_on_service) == []
    assert router.counters.drops["ipv4-on-service"] == 1
    router.vnet = _Boom()  # frames with a partial checksum go through it
    partial = memoryview(VNET.pack(1, 0, 0, 0, 34, 16))
    assert router.route_vnet(Port.SERVICE, partial, ipv4_on_service) == []
    assert router.counters.drops["worker-error"] == 1
    assert router.counters.last_error == "RuntimeError: bug"
    assert router.counters.ports[Port.SERVICE].rx_frames == 2


def test_set_userspace_io_rewrites_the_config_and_waits_for_status(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    path = _write(tmp_path, {**CONFIG, "state_dir": str(state), "userspace_io": "packet"})
    status = state / "status.json"

    def gateway() -> None:  # what `cjb gateway run` does after it reloads the config
        while load(path).userspace_io != "packet-vnet":
            threading.Event().wait(0.05)
        tenants = {
            t.name: {"state": "running", "userspace_io": t.userspace_io} for t in load(path).tenants
        }
        status.write_text(json.dumps({"tenants": tenants}))

    thread = threading.Thread(target=gateway)
    thread.start()
    set_userspace_io(path, "packet-vnet", timeout=10)
    thread.join()
    # the per-tenant override is gone: the gateway-wide mode applies to every tenant
    assert {t.userspace_io for t in load(path).tenants} == {"packet-vnet"}
    with pytest.raises(ModeSwitchTimeout, match="userspace_io='packet'"):
        set_userspace_io(path, "packet", timeout=0.3)


def test_vnet_translator_counts_to_service_and_to_lan_apart() -> None:
    xl = VnetTranslator(Translator(XlatConfig()))
    assert xl.translate(b"short", MACS, Direction.TO_LAN).drop == "gso-bad-vnet-header"
    assert xl.counters.as_dict()["drops"] == {"gso-bad-vnet-header": 1}


def test_status_table_shows_the_io_mode_and_super_frames() -> None:
    gso = {"superframes": {"to-service": 3, "to-lan": 1}, "segments": {"to-service": 90}}
    tenants = {
        "acme": {"state": "running", "userspace_io": "packet-vnet", "gso": gso},
        "globex": {"state": "running", "userspace_io": "packet"},
    }
    text = render({"pid": 1, "updated": 100.0, "tenants": tenants}, Path("s.json"), now=100.0)
    assert "userspace io: packet-vnet, to-service 3 super-frames (90 segments)" in text
    assert "to-lan 1 super-frames (0 segments)" in text
    assert "  userspace io: packet\n" in text


def test_vnet_router_drops_unicast_no_cloud_link_owns() -> None:
    cloud = MACS[:6]
    guard = LanGuard(frozenset({cloud}))
    router = VnetFrameRouter(VnetTranslator(Translator(XlatConfig())), False, guard)
    stranger = memoryview(b"\x02\x11\x22\x33\x44\x55" + MACS[6:] + b"\x08\x00" + bytes(46))
    assert router.route_vnet(Port.TUNNEL, memoryview(NO_VNET), stranger) == []
    assert router.counters.drops["unicast-not-for-cloud"] == 1
    to_cloud = memoryview(MACS + b"\x08\x00" + bytes(46))  # reaches the translator
    assert router.route_vnet(Port.TUNNEL, memoryview(NO_VNET), to_cloud) == []
    assert router.counters.drops["unicast-not-for-cloud"] == 1
    assert router.counters.drops["malformed"] == 1
