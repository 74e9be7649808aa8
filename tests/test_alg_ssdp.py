"""SSDP URL rewriting (UPnP Device Architecture 1.1/2.0 §1) in the discovery ALG."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cjb.gateway.xlat.alg import ssdp
from cjb.gateway.xlat.alg.ssdp import Outcome

LIMIT = 1472

NOTIFY = (
    b"NOTIFY * HTTP/1.1\r\n"
    b"HOST: 239.255.255.250:1900\r\n"
    b"CACHE-CONTROL: max-age=1800\r\n"
    b"LOCATION: http://192.168.0.20:49152/description.xml\r\n"
    b"NT: upnp:rootdevice\r\n"
    b"NTS: ssdp:alive\r\n"
    b"SERVER: Linux/6.1 UPnP/1.1 Printer/1.0\r\n"
    b"USN: uuid:1234::upnp:rootdevice\r\n"
    b"\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"CACHE-CONTROL: max-age=1800\r\n"
    b"EXT:\r\n"
    b"location: http://192.168.0.20/desc.xml\r\n"
    b"AL: <http://192.168.0.20:8080/a.xml><http://10.1.2.3/b.xml>\r\n"
    b"SECURELOCATION.UPNP.ORG: https://192.168.0.20:8443/desc.xml\r\n"
    b"ST: urn:schemas-upnp-org:device:Printer:1\r\n"
    b"USN: uuid:1234::urn:schemas-upnp-org:device:Printer:1\r\n"
    b"\r\n"
)


def test_notify_location_and_host_grow_to_fe80_literals() -> None:
    r = ssdp.rewrite_to_service(NOTIFY, LIMIT)
    assert r.outcome is Outcome.REWRITTEN and r.payload is not None
    assert b"LOCATION: http://[fe80::c0a8:14]:49152/description.xml\r\n" in r.payload
    assert b"HOST: [FF02::C]:1900\r\n" in r.payload
    assert len(r.payload) == len(NOTIFY) + 3 - 6  # LOCATION grows by 3, HOST shrinks by 6
    assert r.payload.endswith(b"\r\n\r\n")


def test_search_response_location_al_and_securelocation_all_rewritten() -> None:
    r = ssdp.rewrite_to_service(RESPONSE, LIMIT)
    assert r.payload is not None
    text = r.payload
    assert b"location: http://[fe80::c0a8:14]/desc.xml\r\n" in text  # header case kept
    assert b"AL: <http://[fe80::c0a8:14]:8080/a.xml><http://[fe80::a01:203]/b.xml>\r\n" in text
    assert b"SECURELOCATION.UPNP.ORG: https://[fe80::c0a8:14]:8443/desc.xml\r\n" in text
    assert b"USN: uuid:1234::urn:schemas-upnp-org:device:Printer:1\r\n" in text


def test_to_lan_shrinks_back_to_the_original_bytes() -> None:
    for original in (NOTIFY, RESPONSE):
        there = ssdp.rewrite_to_service(original, LIMIT).payload
        assert there is not None
        back = ssdp.rewrite_to_lan(there, LIMIT)
        assert back.outcome is Outcome.REWRITTEN
        assert back.payload == original


def test_to_lan_drops_a_zone_and_leaves_other_ipv6_alone() -> None:
    msg = (
        b"HTTP/1.1 200 OK\r\n"
        b"LOCATION: http://[fe80::c0a8:64%25t1]:80/d.xml\r\n"
        b"AL: <http://[2001:db8::1]/x.xml>\r\n\r\n"
    )
    r = ssdp.rewrite_to_lan(msg, LIMIT)
    assert r.payload == (
        b"HTTP/1.1 200 OK\r\nLOCATION: http://192.168.0.100:80/d.xml\r\n"
        b"AL: <http://[2001:db8::1]/x.xml>\r\n\r\n"
    )


def test_msearch_host_to_lan_and_bare_lf_lines() -> None:
    msg = (
        b'M-SEARCH * HTTP/1.1\nHOST: [ff02::c]:1900\nMAN: "ssdp:discover"\nMX: 2\nST: ssdp:all\n\n'
    )
    r = ssdp.rewrite_to_lan(msg, LIMIT)
    assert r.payload == msg.replace(b"[ff02::c]", b"239.255.255.250")


@pytest.mark.parametrize(
    "location",
    [
        b"http://127.0.0.1:80/x",  # loopback: not a LAN host
        b"http://300.1.1.1/x",  # not an address
        b"http://printer.local/x",  # a name: nothing to translate
        b"http://192.168.0.200.example/x",  # dotted quad that is a name prefix
    ],
)
def test_untranslatable_locations_are_unchanged(location: bytes) -> None:
    msg = b"HTTP/1.1 200 OK\r\nLOCATION: " + location + b"\r\n\r\n"
    assert ssdp.rewrite_to_service(msg, LIMIT).outcome is Outcome.UNCHANGED


def test_body_is_never_touched() -> None:
    msg = b"NOTIFY * HTTP/1.1\r\nLOCATION: http://10.0.0.1/\r\n\r\nLOCATION: http://10.0.0.2/"
    r = ssdp.rewrite_to_service(msg, LIMIT)
    assert r.payload is not None and r.payload.endswith(b"\r\n\r\nLOCATION: http://10.0.0.2/")


def test_growth_past_the_limit_passes_unchanged() -> None:
    grown = ssdp.rewrite_to_service(RESPONSE, LIMIT).payload
    assert grown is not None and len(grown) == len(RESPONSE) + 4 * 3 + 4  # 10.1.2.3 -> +7
    assert ssdp.rewrite_to_service(RESPONSE, len(grown) - 1).outcome is Outcome.TOO_BIG


@pytest.mark.parametrize(
    "payload",
    [b"", b"GET / HTTP/1.1\r\n\r\n", b"\xff" * 50, b"NOTIFY * HTTP/1.1\r\n" + b"X: y\r\n" * 100],
)
def test_not_ssdp(payload: bytes) -> None:
    assert ssdp.rewrite_to_service(payload, LIMIT).outcome is Outcome.NOT_SSDP


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=400), st.integers(0, 400))
def test_any_bytes_never_raise(noise: bytes, at: int) -> None:
    for base in (NOTIFY, noise, NOTIFY[:at] + noise):
        for rewrite in (ssdp.rewrite_to_service, ssdp.rewrite_to_lan):
            r = rewrite(base, LIMIT)
            assert r.payload is None or len(r.payload) <= LIMIT
