"""The lab's external site (lab/external.py) as data: names, prefixes, the router's DHCP/RA."""

from __future__ import annotations

from pathlib import Path

from cjb.lab.external import CUSTOMER_LAN, UPLINK, _spec, dnsmasq_config
from cjb.lab.topology import LabNames, underlay_net


def test_spec_names_stay_in_the_run_and_route_the_customer_prefix() -> None:
    names = LabNames("ab12")
    spec = _spec(names, taps=True)
    spec.validate()
    owned = [ns.name for ns in spec.namespaces if ns.owned]
    assert owned == ["cjblabab12-xrouter", "cjblabab12-xlan"]
    # Its own prefix: applying it never removes the lab's other namespaces as strays.
    assert spec.namespace_prefix == "cjblabab12-x"
    internet = spec.namespace("cjblabab12-internet")
    assert not internet.owned and internet.routes is None
    router = spec.namespace("cjblabab12-xrouter")
    assert ("net/ipv6/conf/all/forwarding", "1") in router.sysctls
    tap = router.link("tap-wan")
    assert {str(a) for a in tap.addresses} == {"192.168.0.1/24", "fd63:6a62:e1::1/64"}
    assert underlay_net(UPLINK) != underlay_net(CUSTOMER_LAN)
    assert UPLINK > 200 and CUSTOMER_LAN > 200  # beyond the lab's tenants (1..200)


def test_dnsmasq_serves_dhcpv4_and_slaac_ras_without_dns(tmp_path: Path) -> None:
    conf = dnsmasq_config(tmp_path).splitlines()
    assert "interface=tap-wan" in conf and "bind-interfaces" in conf
    assert "port=0" in conf  # no DNS server
    assert "enable-ra" in conf
    assert "dhcp-range=fd63:6a62:e1::,ra-only,64,10m" in conf
    assert "dhcp-range=192.168.0.50,192.168.0.99,255.255.255.0,10m" in conf
    assert f"dhcp-leasefile={tmp_path / 'xrouter-dnsmasq.leases'}" in conf
