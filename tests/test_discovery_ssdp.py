"""The appliance's SSDP advertiser (UDA 1.1 §1.2, §1.3), sans-IO: exact messages and timing."""

from __future__ import annotations

import random
from ipaddress import IPv4Address

from cjb.appliance.discovery.ssdp import MULTICAST, SsdpAdvertiser, devices_for
from cjb.common.control.protocol import CatalogService

MEDIA = CatalogService(
    instance="Cloud Media",
    service_type="_http._tcp",
    port=8200,
    upnp_device_type="urn:schemas-upnp-org:device:MediaServer:2",
    upnp_description_path="upnp/desc.xml",
)
WEB_ONLY = CatalogService(instance="Web", service_type="_http._tcp", port=80)
CLIENT = ("192.168.0.10", 50000)


def search(st: str, mx: str = "2", man: str = '"ssdp:discover"') -> bytes:
    return (
        f"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: {man}\r\nMX: {mx}\r\n"
        f"ST: {st}\r\n\r\n"
    ).encode()


def advertiser() -> SsdpAdvertiser:
    adv = SsdpAdvertiser(random.Random(7), now=0.0, boot_id=5)  # noqa: S311
    adv.set_devices(devices_for("t1", IPv4Address("192.168.0.100"), [MEDIA, WEB_ONLY]), 0.0)
    return adv


def test_devices_only_for_catalog_entries_with_upnp_and_stable_uuids() -> None:
    (one,) = devices_for("t1", IPv4Address("192.168.0.100"), [MEDIA, WEB_ONLY])
    assert one.location == "http://192.168.0.100:8200/upnp/desc.xml"
    (again,) = devices_for("t1", IPv4Address("192.168.0.100"), [MEDIA])
    (other,) = devices_for("t2", IPv4Address("192.168.0.100"), [MEDIA])
    assert one.uuid == again.uuid != other.uuid


def test_alive_on_activate_three_messages_with_location() -> None:
    out = advertiser().activate(10.0)
    assert [o.addr for o in out] == [MULTICAST] * 3
    text = out[2].payload.decode()
    assert text.startswith("NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n")
    assert "NT: urn:schemas-upnp-org:device:MediaServer:2\r\n" in text
    assert "NTS: ssdp:alive\r\n" in text and "CACHE-CONTROL: max-age=1800\r\n" in text
    assert "LOCATION: http://192.168.0.100:8200/upnp/desc.xml\r\n" in text
    assert text.endswith("\r\n\r\n")


def test_search_responses_within_mx_for_matching_types_only() -> None:
    adv = advertiser()
    adv.activate(0.0)
    assert len(adv.on_search(search("ssdp:all"), CLIENT, 100.0)) == 3
    (older,) = adv.on_search(search("urn:schemas-upnp-org:device:MediaServer:1"), CLIENT, 100.0)
    assert 100.0 <= older.send_at <= 102.0 and older.addr == CLIENT
    # §1.3.2: answered with the version asked for
    assert b"ST: urn:schemas-upnp-org:device:MediaServer:1\r\n" in older.payload
    assert adv.on_search(search("urn:schemas-upnp-org:device:MediaServer:3"), CLIENT, 100) == []
    assert adv.on_search(search("urn:schemas-upnp-org:device:Printer:1"), CLIENT, 100) == []
    assert adv.on_search(search("ssdp:all", man="nope"), CLIENT, 100) == []
    assert adv.on_search(b"garbage", CLIENT, 100) == []


def test_byebye_when_deactivated_and_silence_after() -> None:
    adv = advertiser()
    adv.activate(0.0)
    bye = adv.deactivate(5.0)
    assert len(bye) == 3 and all(b"NTS: ssdp:byebye\r\n" in o.payload for o in bye)
    assert all(b"LOCATION" not in o.payload for o in bye)
    assert adv.on_search(search("ssdp:all"), CLIENT, 6.0) == []
    assert adv.next_deadline() is None and adv.deactivate(7.0) == []


def test_catalog_change_sends_byebye_for_removed_devices() -> None:
    adv = advertiser()
    adv.activate(0.0)
    out = adv.set_devices([], 1.0)
    assert len(out) == 3 and all(b"ssdp:byebye" in o.payload for o in out)


def test_periodic_alive_before_max_age() -> None:
    adv = advertiser()
    adv.activate(0.0)
    deadline = adv.next_deadline()
    assert deadline is not None and 600 <= deadline <= 660  # max-age/3 plus jitter
    assert adv.on_timer(deadline - 1) == []
    assert len(adv.on_timer(deadline)) == 3
