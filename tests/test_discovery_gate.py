"""The appliance's discovery gate (sans-IO): allow-list both ways, rate limit, loop guard."""

from __future__ import annotations

import socket

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from zeroconf import (
    DNSAddress,
    DNSIncoming,
    DNSOutgoing,
    DNSPointer,
    DNSQuestion,
    DNSService,
    const,
)

from cjb.appliance.discovery.gate import DiscoveryGate, parse_udp_frame
from cjb.appliance.discovery.policy import AllowList, LoopGuard, TokenBucket, service_type_of

UNIQUE = const._CLASS_IN | const._CLASS_UNIQUE
CLOUD_MAC = bytes.fromhex("02000000c064")


def mdns_frame(
    payload: bytes, src_mac: str = "02:00:00:00:00:14", src: str = "192.168.0.20"
) -> bytes:
    return bytes(
        Ether(src=src_mac, dst="01:00:5e:00:00:fb")
        / IP(src=src, dst="224.0.0.251", ttl=255)
        / UDP(sport=5353, dport=5353)
        / payload
    )


def response(*services: tuple[str, str, int]) -> bytes:
    out = DNSOutgoing(const._FLAGS_QR_RESPONSE | const._FLAGS_AA)
    for instance, stype, port in services:
        name = f"{instance}.{stype}.local."
        out.add_answer_at_time(
            DNSPointer(f"{stype}.local.", const._TYPE_PTR, const._CLASS_IN, 4500, name), 0
        )
        out.add_answer_at_time(
            DNSService(name, const._TYPE_SRV, UNIQUE, 120, 0, 0, port, "host.local."), 0
        )
    out.add_additional_answer(
        DNSAddress("host.local.", const._TYPE_A, UNIQUE, 120, socket.inet_aton("192.168.0.20"))
    )
    (packet,) = out.packets()
    return packet


def gate(**kw: object) -> DiscoveryGate:
    args: dict[str, object] = {"wan_pps": 1000.0, "wan_burst": 1000.0, "now": 0.0}
    args.update(kw)
    return DiscoveryGate(AllowList(), **args)  # type: ignore[arg-type]


def names_in(frame: bytes) -> list[str]:
    u = parse_udp_frame(frame)
    assert u is not None
    return sorted({r.name for r in DNSIncoming(u.payload).answers()})


def test_allowed_response_passes_byte_identical() -> None:
    frame = mdns_frame(response(("Printer", "_ipp._tcp", 631)))
    assert gate().from_lan(frame, 1.0).frames == (frame,)


def test_forbidden_service_alone_is_dropped() -> None:
    v = gate().from_lan(mdns_frame(response(("box", "_ssh._tcp", 22))), 1.0)
    assert v.frames == () and v.drop == "mdns-not-allowed"


def test_mixed_response_is_rebuilt_without_the_forbidden_records() -> None:
    frame = mdns_frame(response(("Printer", "_ipp._tcp", 631), ("box", "_ssh._tcp", 22)))
    g = gate()
    (out,) = g.from_lan(frame, 1.0).frames
    assert names_in(out) == ["Printer._ipp._tcp.local.", "_ipp._tcp.local.", "host.local."]
    # lengths and checksums of the rebuilt frame, checked by scapy
    pkt = Ether(out)
    sent = (pkt[IP].chksum, pkt[UDP].chksum)
    del pkt[IP].chksum, pkt[UDP].chksum
    again = Ether(bytes(pkt))
    assert (again[IP].chksum, again[UDP].chksum) == sent
    assert pkt[IP].len == len(out) - 14


def test_the_allow_list_applies_from_the_wan_too() -> None:
    v = gate().from_wan(mdns_frame(response(("rfb", "_rfb._tcp", 5900))), 1.0)
    assert v.drop == "mdns-not-allowed"


def test_what_came_from_the_tunnel_is_never_sent_back() -> None:
    g = gate()
    cloud = mdns_frame(response(("Cloud Web", "_http._tcp", 80)), src="192.168.0.100")
    assert g.from_wan(cloud, 1.0).frames == (cloud,)
    # A LAN reflector repeats it: suppressed, record by record.
    echoed = mdns_frame(response(("Cloud Web", "_http._tcp", 80), ("Printer", "_ipp._tcp", 631)))
    (out,) = g.from_lan(echoed, 2.0).frames
    assert "Cloud Web._http._tcp.local." not in names_in(out)
    assert "Printer._ipp._tcp.local." in names_in(out)
    assert g.counters["mdns-loop-suppressed"] >= 1


def test_known_answers_in_cloud_queries_do_not_mark_lan_services_as_loops() -> None:
    g = gate()
    query = DNSOutgoing(0)  # RFC 6762 §7.1: the cloud's query lists the LAN PTR it cached
    query.add_question(DNSQuestion("_ipp._tcp.local.", const._TYPE_PTR, const._CLASS_IN))
    query.add_answer_at_time(
        DNSPointer(
            "_ipp._tcp.local.", const._TYPE_PTR, const._CLASS_IN, 4500, "Printer._ipp._tcp.local."
        ),
        0,
    )
    (packet,) = query.packets()
    assert g.from_wan(mdns_frame(packet, src="192.168.0.100"), 1.0).frames
    lan = mdns_frame(response(("Printer", "_ipp._tcp", 631)))
    assert g.from_lan(lan, 2.0).frames == (lan,)


def test_frames_from_cloud_macs_are_loops() -> None:
    g = DiscoveryGate(
        AllowList(), wan_pps=10, wan_burst=10, now=0, cloud_macs=frozenset({CLOUD_MAC})
    )
    frame = mdns_frame(response(("Printer", "_ipp._tcp", 631)), src_mac="02:00:00:00:c0:64")
    assert g.from_lan(frame, 1.0).drop == "loop-mac"


def test_storm_is_cut_to_the_bucket() -> None:
    g = gate(wan_pps=20.0, wan_burst=40.0)
    frame = mdns_frame(response(("Printer", "_ipp._tcp", 631)))
    passed = sum(bool(g.from_lan(frame, i / 10000).frames) for i in range(10000))  # 1 s
    assert passed <= 40 + 20 * 1
    assert g.counters["lan-to-wan-drop-rate-limit"] == 10000 - passed


def test_non_discovery_and_garbage_frames_are_dropped_with_a_reason() -> None:
    g = gate()
    tcp = bytes(Ether() / IP(src="192.168.0.20", dst="192.168.0.100") / UDP(sport=1, dport=2))
    assert g.from_lan(tcp, 0).drop == "not-discovery"
    assert g.from_lan(mdns_frame(b"\x00" * 5), 0).drop == "mdns-invalid"


def ssdp_frame(text: str) -> bytes:
    return bytes(
        Ether(src="02:00:00:00:00:14", dst="01:00:5e:7f:ff:fa")
        / IP(src="192.168.0.20", dst="239.255.255.250")
        / UDP(sport=1900, dport=1900)
        / text.replace("\n", "\r\n").encode()
    )


def test_ssdp_typed_announcements_by_allow_list_generic_ones_never() -> None:
    g = gate()
    printer = (
        "NOTIFY * HTTP/1.1\nNT: urn:schemas-upnp-org:device:Printer:1\n"
        "NTS: ssdp:alive\nUSN: uuid:p::x\n\n"
    )
    igd = printer.replace("device:Printer:1", "device:InternetGatewayDevice:1").replace(
        "uuid:p", "uuid:i"
    )
    root = printer.replace("urn:schemas-upnp-org:device:Printer:1", "upnp:rootdevice")
    assert g.from_lan(ssdp_frame(printer), 0).frames
    assert g.from_lan(ssdp_frame(igd), 0).drop == "ssdp-not-allowed"
    assert g.from_lan(ssdp_frame(root), 0).drop == "ssdp-not-allowed"
    search = 'M-SEARCH * HTTP/1.1\nMAN: "ssdp:discover"\nMX: 1\nST: ssdp:all\n\n'
    assert g.from_wan(ssdp_frame(search), 0).frames


def test_ssdp_device_seen_from_the_wan_is_not_echoed_back() -> None:
    g = gate()
    text = (
        "NOTIFY * HTTP/1.1\nNT: urn:schemas-upnp-org:device:MediaServer:1\n"
        "NTS: ssdp:alive\nUSN: uuid:cloud::x\n\n"
    )
    assert g.from_wan(ssdp_frame(text), 0).frames
    assert g.from_lan(ssdp_frame(text), 1).drop == "ssdp-loop"


def test_policy_helpers() -> None:
    assert service_type_of(("_universal", "_sub", "_ipp", "_tcp", "local")) == "_ipp._tcp"
    assert service_type_of(("printer", "local")) is None
    bucket = TokenBucket(1, 2, now=0)
    assert [bucket.take(0), bucket.take(0), bucket.take(0), bucket.take(1)] == [
        True,
        True,
        False,
        True,
    ]
    guard = LoopGuard(capacity=2, hold_seconds=10)
    for key in ("a", "b", "c"):
        guard.remember(key, 0)
    assert not guard.seen("a", 1) and guard.seen("c", 1) and not guard.seen("c", 11)
    assert AllowList().upnp_type_allowed("urn:schemas-upnp-org:device:MediaServer:4")
    assert not AllowList().upnp_type_allowed("urn:schemas-upnp-org:device:MediaServer")


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=300), st.sampled_from([5353, 1900]))
def test_any_payload_on_the_discovery_ports_never_raises(payload: bytes, port: int) -> None:
    frame = bytes(
        Ether() / IP(src="192.168.0.20", dst="224.0.0.251") / UDP(sport=port, dport=port) / payload
    )
    g = gate()
    for v in (g.from_lan(frame, 0), g.from_wan(frame, 0)):
        assert v.drop != "internal-error"
    for cut in (0, 13, 20, 30, 41):
        g.from_lan(frame[:cut], 0)


def test_relay_config_from_the_enrolled_device_config() -> None:
    from ipaddress import IPv4Address

    from cjb.appliance.discovery import RelayConfig
    from cjb.common.control.protocol import DeviceConfig, TunnelConfig

    device = DeviceConfig(
        config_version=3,
        tenant="acme",
        tunnel=TunnelConfig(
            vni=7,
            overlay_address="fd00::7",
            gateway_overlay_address="fd00::1",
            gateway_wireguard_public_key="A" * 43 + "=",
            gateway_endpoint="gw:51820",
        ),
        service_ipv4="192.168.0.100",
        cloud_macs=["02:00:00:00:c0:64"],
    )
    cfg = RelayConfig.for_device(
        device, lan_ifname="br-lan", lan_address=IPv4Address("192.168.0.2"), wan_pps=5.0
    )
    assert (cfg.tenant, cfg.service_ipv4, cfg.wan_pps) == (
        "acme",
        IPv4Address("192.168.0.100"),
        5.0,
    )
    assert cfg.cloud_macs == frozenset({CLOUD_MAC})
