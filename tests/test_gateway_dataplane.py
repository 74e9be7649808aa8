"""Gateway data plane without a kernel: config errors, kernel objects (golden), VNI binding
rules, the worker's routing decisions, and the tenant directory the service host reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cjb.common.netlink import apply, link_sysctl_key
from cjb.common.netlink.fake import FakeKernel
from cjb.gateway.dataplane.config import ConfigFileError, load
from cjb.gateway.dataplane.directory import directory
from cjb.gateway.dataplane.kernel_spec import gateway_spec
from cjb.gateway.dataplane.lan_guard import LanGuard, cloud_macs, lan_guard
from cjb.gateway.dataplane.router import FrameRouter, Port
from cjb.gateway.dataplane.vni_binding import binding_table
from cjb.gateway.xlat import Direction, DropReason, Emit, Side, XlatResult
from cjb.service.directory import parse_directory

CONFIG = {
    "underlay": {"address": "fd63:6a62::2", "device": "wan0"},
    "service_netns": "svc",
    "state_dir": "/nonexistent/cjb-test-gw",  # never written by these tests
    "tenants": {
        "acme": {"vni": 7, "appliance": "fd63:6a62:1::2"},
        "globex": {"vni": 8, "appliance": "fd63:6a62:2::2", "native_ipv6": False},
    },
}


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "gw.json"
    path.write_text(json.dumps(data))
    return path


def test_config_errors_name_the_file_and_the_field(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(CONFIG))
    bad["tenants"]["acme"]["vni"] = 1 << 24
    path = _write(tmp_path, bad)
    with pytest.raises(ConfigFileError) as info:
        load(path)
    assert str(path) in str(info.value)
    assert "tenants.acme.vni" in str(info.value)


def test_config_refuses_a_reused_vni(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(CONFIG))
    bad["tenants"]["globex"]["vni"] = 7
    with pytest.raises(ConfigFileError, match="reuses vni 7"):
        load(_write(tmp_path, bad))


def test_config_missing_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="no such file"):
        load(tmp_path / "absent.json")


GOLDEN_GATEWAY = """\
netns (current)
  sysctl net/ipv6/conf/nl-acme/accept_ra=0
  sysctl net/ipv6/conf/nl-acme/autoconf=0
  sysctl net/ipv6/conf/nl-acme/disable_ipv6=1
  sysctl net/ipv6/conf/sl-acme/accept_ra=0
  sysctl net/ipv6/conf/sl-acme/autoconf=0
  sysctl net/ipv6/conf/sl-acme/disable_ipv6=1
  sysctl net/ipv6/conf/sl-globex/accept_ra=0
  sysctl net/ipv6/conf/sl-globex/autoconf=0
  sysctl net/ipv6/conf/sl-globex/disable_ipv6=1
  sysctl net/ipv6/conf/vx-acme/accept_ra=0
  sysctl net/ipv6/conf/vx-acme/autoconf=0
  sysctl net/ipv6/conf/vx-acme/disable_ipv6=1
  sysctl net/ipv6/conf/vx-globex/accept_ra=0
  sysctl net/ipv6/conf/vx-globex/autoconf=0
  sysctl net/ipv6/conf/vx-globex/disable_ipv6=1
  link nl-acme kind=veth mtu=1500 master=- up alias=cjb:gw
  link sl-acme kind=veth mtu=1520 master=- up alias=cjb:gw
  link sl-globex kind=veth mtu=1520 master=- up alias=cjb:gw
  link vx-acme kind=vxlan mtu=1500 master=- up alias=cjb:gw vni=7 local=fd63:6a62::2 \
remote=fd63:6a62:1::2 port=4789
  link vx-globex kind=vxlan mtu=1500 master=- up alias=cjb:gw vni=8 local=fd63:6a62::2 \
remote=fd63:6a62:2::2 port=4789
netns svc
  sysctl net/ipv6/conf/acme/accept_dad=0
  sysctl net/ipv6/conf/acme/accept_ra=0
  sysctl net/ipv6/conf/acme/addr_gen_mode=1
  sysctl net/ipv6/conf/acme/autoconf=0
  sysctl net/ipv6/conf/globex/accept_dad=0
  sysctl net/ipv6/conf/globex/accept_ra=0
  sysctl net/ipv6/conf/globex/addr_gen_mode=1
  sysctl net/ipv6/conf/globex/autoconf=0
  sysctl net/ipv6/conf/n-acme/accept_dad=0
  sysctl net/ipv6/conf/n-acme/accept_ra=0
  sysctl net/ipv6/conf/n-acme/autoconf=0
  sysctl net/ipv6/neigh/acme/delay_first_probe_time=1
  sysctl net/ipv6/neigh/acme/mcast_resolicit=3
  sysctl net/ipv6/neigh/acme/ucast_solicit=1
  sysctl net/ipv6/neigh/globex/delay_first_probe_time=1
  sysctl net/ipv6/neigh/globex/mcast_resolicit=3
  sysctl net/ipv6/neigh/globex/ucast_solicit=1
  sysctl net/ipv6/neigh/n-acme/delay_first_probe_time=1
  sysctl net/ipv6/neigh/n-acme/mcast_resolicit=3
  sysctl net/ipv6/neigh/n-acme/ucast_solicit=1
  link acme kind=veth mtu=1520 master=- up alias=cjb:gw mac=02:c7:00:00:07:01
    addr fe80::c0a8:64/64
  link globex kind=veth mtu=1520 master=- up alias=cjb:gw mac=02:c7:00:00:08:01
    addr fe80::c0a8:64/64
  link n-acme kind=veth mtu=1500 master=- up alias=cjb:gw mac=02:c7:00:00:07:02
    addr fe80::c0a8:64/64
"""


def test_gateway_kernel_objects_golden(tmp_path: Path) -> None:
    cfg = load(_write(tmp_path, CONFIG))
    kernel = FakeKernel()
    kernel.add_namespace("svc")
    apply(kernel, gateway_spec(cfg))
    rendered = kernel.render()
    assert rendered == GOLDEN_GATEWAY
    assert apply(kernel, gateway_spec(cfg)) == []


def test_removing_a_tenant_removes_its_objects_on_both_sides(tmp_path: Path) -> None:
    cfg = load(_write(tmp_path, CONFIG))
    kernel = FakeKernel()
    kernel.add_namespace("svc")
    apply(kernel, gateway_spec(cfg))
    smaller = json.loads(json.dumps(CONFIG))
    del smaller["tenants"]["acme"]
    apply(kernel, gateway_spec(load(_write(tmp_path, smaller))))
    assert "acme" not in kernel.render()
    assert "globex" in kernel.render()


def test_vni_binding_rules(tmp_path: Path) -> None:
    table = binding_table(load(_write(tmp_path, CONFIG)))
    script = table.script()
    assert script.startswith("table inet cjb_gw\ndelete table inet cjb_gw\n")
    assert "@th,96,24 7 ip6 saddr fd63:6a62:1::2 counter name ok_acme accept" in script
    assert "@th,96,24 7 counter name spoof_acme drop" in script
    assert "@th,96,24 8 ip6 saddr fd63:6a62:2::2 counter name ok_globex accept" in script
    assert script.rstrip().endswith("counter name unknown_vni drop\n\t}\n}")


def test_directory_is_what_the_service_library_reads(tmp_path: Path) -> None:
    cfg = load(_write(tmp_path, CONFIG))
    data = directory(cfg).to_json().encode()
    parsed = parse_directory(data, "test")
    acme = parsed.binding("acme")
    native = parsed.binding("n-acme")
    assert acme is not None and acme.entry.tenant == "acme" and acme.link == "service"
    assert native is not None and native.entry.tenant == "acme" and native.link == "native"
    assert parsed.binding("n-globex") is None


class _FakeTranslator:
    def __init__(self) -> None:
        self.seen: list[tuple[bytes, Direction]] = []

    def translate(self, frame: bytes, direction: Direction) -> XlatResult:
        self.seen.append((frame, direction))
        if frame.startswith(b"BOOM"):
            raise ValueError("bad frame")
        if frame.startswith(b"DROP"):
            return XlatResult(drop=DropReason.MALFORMED)
        side = Side.SERVICE if direction is Direction.TO_SERVICE else Side.LAN
        return XlatResult(emits=(Emit(side, b"X" + frame),))


IPV4 = b"\x02" * 12 + b"\x08\x00" + b"payload"
IPV6 = b"\x02" * 12 + b"\x86\xdd" + b"payload"


def test_router_sends_ipv6_from_the_tunnel_to_the_native_link_untranslated() -> None:
    xl = _FakeTranslator()
    router = FrameRouter(xl, native=True)
    assert router.route(Port.TUNNEL, IPV6) == [(Port.NATIVE, IPV6)]
    assert router.route(Port.NATIVE, IPV6) == [(Port.TUNNEL, IPV6)]
    assert xl.seen == []


def test_router_without_native_link_counts_ipv6() -> None:
    router = FrameRouter(_FakeTranslator(), native=False)
    assert router.route(Port.TUNNEL, IPV6) == []
    assert router.counters.drops["native-ipv6-no-link"] == 1


def test_router_translates_both_ways_and_counts() -> None:
    xl = _FakeTranslator()
    router = FrameRouter(xl, native=True)
    assert router.route(Port.TUNNEL, IPV4) == [(Port.SERVICE, b"X" + IPV4)]
    assert router.route(Port.SERVICE, IPV6) == [(Port.TUNNEL, b"X" + IPV6)]
    assert [d for _, d in xl.seen] == [Direction.TO_SERVICE, Direction.TO_LAN]
    assert router.counters.ports[Port.TUNNEL].rx_frames == 1
    assert router.counters.ports[Port.TUNNEL].rx_bytes == len(IPV4)


def test_one_bad_frame_is_counted_and_does_not_stop_the_router() -> None:
    router = FrameRouter(_FakeTranslator(), native=True)
    assert router.route(Port.SERVICE, b"BOOM" + IPV6) == []
    assert router.route(Port.SERVICE, b"DROP") == []
    assert router.route(Port.TUNNEL, IPV4)
    assert router.counters.drops == {"worker-error": 1, "malformed": 1}
    assert router.counters.last_error == "ValueError: bad frame"


def test_exception_inside_the_translator_keeps_its_type_and_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fault injected below Translator.translate: the frame is a counted internal-error
    drop (the data path never raises), and the router keeps what the exception was."""
    from cjb.gateway.xlat import Translator
    from cjb.gateway.xlat import translator as translator_module

    def boom(*_args: object) -> None:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(translator_module, "ipv4_to_service_fast", boom)
    translator = Translator()
    router = FrameRouter(translator, native=False)
    frame = b"\x02" * 12 + b"\x08\x00" + bytes(40)
    assert router.route(Port.TUNNEL, frame) == []
    assert router.counters.drops == {"internal-error": 1}
    assert translator.counters.drops[DropReason.INTERNAL_ERROR] == 1
    assert router.counters.last_error is not None
    assert router.counters.last_error.startswith("translator: RuntimeError: injected fault")
    [error] = translator.errors.as_list()
    assert (error["type"], error["message"], error["direction"]) == (
        "RuntimeError",
        "injected fault",
        "to-service",
    )
    assert error["frame_head"] == frame.hex()


def test_translator_error_ring_is_bounded() -> None:
    from cjb.gateway.xlat.errors import RING_SIZE, RecentErrors

    ring = RecentErrors()
    for i in range(RING_SIZE + 5):
        ring.record(ValueError(f"n{i}"), Direction.TO_LAN, bytes(200))
    assert ring.total == RING_SIZE + 5 and len(ring) == RING_SIZE
    last = ring.last()
    assert last is not None and last.message == f"n{RING_SIZE + 4}"
    assert len(last.frame_head) == 64
    assert [e.number for e in ring.since(RING_SIZE + 3)] == [RING_SIZE + 4, RING_SIZE + 5]


def test_worker_logs_data_path_exceptions_at_a_bounded_rate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from cjb.gateway.dataplane.worker import ErrorReporter

    now = [100.0]
    reporter = ErrorReporter("worker on svc-t1", interval=10.0, clock=lambda: now[0])
    router = FrameRouter(_FakeTranslator(), native=True)
    caplog.set_level("ERROR", logger="cjb.gateway.worker")
    reporter.check(router.counters)
    assert reporter.lines == 0  # nothing happened, nothing said
    for _ in range(500):
        router.route(Port.SERVICE, b"BOOM" + IPV6)
        reporter.check(router.counters)
        now[0] += 0.001
    assert reporter.lines == 1  # a flood gives one line per interval, not 500
    assert "1 data-path exception(s)" in caplog.text
    assert "ValueError: bad frame" in caplog.text
    now[0] += 10.0
    reporter.check(router.counters)
    assert reporter.lines == 2
    assert "499 data-path exception(s)" in caplog.records[-1].getMessage()
    reporter.check(router.counters)
    assert reporter.lines == 2


def test_vni_binding_counters_survive_a_table_replacement(tmp_path: Path) -> None:
    cfg = load(_write(tmp_path, CONFIG))
    script = binding_table(cfg, {"spoof_acme": (5, 500)}).script()
    assert "counter spoof_acme { packets 5 bytes 500 }" in script
    assert "counter ok_acme { packets 0 bytes 0 }" in script


CLOUD = bytes.fromhex("02c700000701")


def test_router_drops_unicast_from_the_tunnel_that_no_cloud_link_owns() -> None:
    """A LAN's unknown unicast (random destination MACs) never reaches the translator; group
    frames and unicast to a cloud MAC do; frames from the service side are not checked."""
    xl = _FakeTranslator()
    router = FrameRouter(xl, native=True, guard=LanGuard(frozenset({CLOUD})))
    stranger = b"\x02\x11\x22\x33\x44\x55" + IPV4[6:]
    assert router.route(Port.TUNNEL, stranger) == []
    assert router.route(Port.TUNNEL, b"\x02\x11\x22\x33\x44\x56" + IPV6[6:]) == []
    assert router.counters.drops["unicast-not-for-cloud"] == 2
    to_cloud = CLOUD + IPV4[6:]
    assert router.route(Port.TUNNEL, to_cloud) == [(Port.SERVICE, b"X" + to_cloud)]
    broadcast = b"\xff" * 6 + IPV4[6:]
    multicast = b"\x01\x00\x5e\x00\x00\xfb" + IPV4[6:]
    assert router.route(Port.TUNNEL, broadcast) == [(Port.SERVICE, b"X" + broadcast)]
    assert router.route(Port.TUNNEL, multicast) == [(Port.SERVICE, b"X" + multicast)]
    assert router.route(Port.SERVICE, stranger) == [(Port.TUNNEL, b"X" + stranger)]
    assert [f for f, _ in xl.seen] == [to_cloud, broadcast, multicast, stranger]
    assert router.counters.ports[Port.TUNNEL].rx_frames == 5  # received, then dropped
    for short in (b"", b"\x02", stranger[:13]):  # never an exception: the translator counts it
        assert router.route(Port.TUNNEL, short) == [(Port.SERVICE, b"X" + short)]


def test_router_without_a_guard_checks_nothing() -> None:
    router = FrameRouter(_FakeTranslator(), native=False)
    stranger = b"\x02\x11\x22\x33\x44\x55" + IPV4[6:]
    assert router.route(Port.TUNNEL, stranger) == [(Port.SERVICE, b"X" + stranger)]
    assert router.route(Port.TUNNEL, _arp(b"\xc0\xa8\x00\x64", b"\xc0\xa8\x00\x64")) != []


def _arp(sender_ip: bytes, target_ip: bytes, op: int = 1) -> bytes:
    """An ARP frame (RFC 826) from a LAN MAC, broadcast."""
    mac = b"\x02\xcb\x00\x00\x00\x01"
    arp = b"\x00\x01\x08\x00\x06\x04" + op.to_bytes(2, "big") + mac + sender_ip
    return b"\xff" * 6 + mac + b"\x08\x06" + arp + bytes(6) + target_ip


def test_router_drops_arp_claiming_the_service_address() -> None:
    """A LAN device announcing or answering for the service address conflicts with the
    cloud (RFC 5227 §2.4) or spoofs it: dropped, counted; probes and requests pass."""
    xl = _FakeTranslator()
    svc, client = b"\xc0\xa8\x00\x64", b"\xc0\xa8\x00\x0a"
    router = FrameRouter(xl, native=False, guard=LanGuard(frozenset({CLOUD}), svc))
    assert router.route(Port.TUNNEL, _arp(svc, svc)) == []  # gratuitous (announcement)
    assert router.route(Port.TUNNEL, _arp(svc, client, op=2)) == []  # reply for it
    assert router.counters.drops["arp-claims-service-address"] == 2
    probe, request = _arp(bytes(4), svc), _arp(client, svc)  # RFC 5227 probe; who-has .100
    assert router.route(Port.TUNNEL, probe) == [(Port.SERVICE, b"X" + probe)]
    assert router.route(Port.TUNNEL, request) == [(Port.SERVICE, b"X" + request)]


def test_cloud_macs_are_the_service_host_links(tmp_path: Path) -> None:
    """The worker's cloud MACs are exactly the MACs the gateway gives the service-host ends
    (so nothing a LAN legitimately sends to the cloud is dropped)."""
    cfg = load(_write(tmp_path, CONFIG))
    kernel = FakeKernel()
    kernel.add_namespace("svc")
    apply(kernel, gateway_spec(cfg))
    for t in cfg.tenants:
        links = kernel.links("svc")
        made = {links[name].mac for name in (t.service_ifname, t.native_ifname) if name in links}
        assert {m.hex(":") for m in cloud_macs(t)} == made
    assert [len(cloud_macs(t)) for t in cfg.tenants] == [2, 1]  # globex has no native link
    assert lan_guard(cfg.tenants[0]).service_ipv4 == b"\xc0\xa8\x00\x64"


def test_neighbour_sysctls_of_a_link_live_under_neigh() -> None:
    assert link_sysctl_key("tenant1", "ipv6.accept_dad") == "net/ipv6/conf/tenant1/accept_dad"
    assert (
        link_sysctl_key("tenant1", "ipv6.neigh.mcast_resolicit")
        == "net/ipv6/neigh/tenant1/mcast_resolicit"
    )
