"""The service host's browse helper: what it reports without a network (the real browse runs
in tests/test_discovery_netns.py)."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from cjb.service.directory import TenantDirectory, TenantEntry
from cjb.service.discovery import LanService, browse, browse_tenant
from cjb.service.errors import DirectoryError


def test_lan_ipv4_behind_the_fe80_96_addresses() -> None:
    svc = LanService(
        name="Printer._ipp._tcp.local.",
        service_type="_ipp._tcp",
        server="printer.local.",
        port=631,
        addresses=("fe80::c0a8:14%t1", "fe80::1%t1", "2001:db8::5"),
    )
    assert svc.lan_ipv4 == (IPv4Address("192.168.0.20"),)


def test_unknown_interface_is_named_in_the_error() -> None:
    with pytest.raises(OSError, match="no interface 'cjb-nope0'"):
        browse("cjb-nope0", ["_ipp._tcp"], timeout=0.1)


def test_unknown_tenant_is_named_in_the_error() -> None:
    directory = TenantDirectory.build(
        (TenantEntry("t1", "acme", IPv4Address("192.168.0.100"), None),)
    )
    with pytest.raises(DirectoryError, match="'globex'"):
        browse_tenant(directory, "globex", ["_ipp._tcp"], timeout=0.1)
