"""The tunnel's MTU budget (common/tunnel_mtu.py): WireGuard sized for the WAN path, and
every link of a tenant sized so that what the tunnel cannot carry whole is never sent.
The black hole itself is tested end to end in tests/resilience/test_lab_faults.py."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from cjb.appliance.tunnel import TunnelRequest
from cjb.appliance.tunnel_wireguard import WireGuardTunnelBuilder
from cjb.common.control.protocol import TunnelConfig
from cjb.common.netlink.fake import FakeKernel
from cjb.common.tunnel_mtu import (
    DEFAULT_WIREGUARD_MTU,
    MIN_WIREGUARD_MTU,
    lan_mtu_through,
    wireguard_mtu_for_path,
)
from cjb.common.wireguard import generate_private_key, public_key
from cjb.gateway.control.settings import SettingsError, load_text, render_template
from cjb.gateway.dataplane.config import ConfigFileError, load
from cjb.gateway.dataplane.kernel_spec import tenant_links

KEY = public_key(generate_private_key())


def test_budget_for_a_1500_byte_path() -> None:
    # RFC 8200 IPv6 40 + UDP 8 + WireGuard data header 16 + Poly1305 tag 16 = 80
    assert wireguard_mtu_for_path(1500) == DEFAULT_WIREGUARD_MTU == 1420
    # IPv6 40 + UDP 8 + VXLAN 8 (RFC 7348 §5) + inner Ethernet 14 = 70
    assert lan_mtu_through(1420, 1500) == 1350
    assert lan_mtu_through(1420, 1300) == 1300  # a small LAN fits whole
    assert lan_mtu_through(1620, 1500) == 1500  # a jumbo path carries full LAN frames
    assert lan_mtu_through(MIN_WIREGUARD_MTU, 1500) == 1280  # IPv6 minimum link MTU
    assert wireguard_mtu_for_path(1492) == 1412  # PPPoE


def _gateway(tmp: Path, **wireguard: object) -> Path:
    doc = {
        "wireguard": {"ifname": "wgtest0", "private_key_file": "/nonexistent"} | wireguard,
        "state_dir": "/nonexistent/state",
        "tenants": {
            "acme": {"vni": 7, "appliance": "fd63:6a62:77::100", "wireguard_public_key": KEY}
        },
    }
    path = tmp / "gw.json"
    path.write_text(json.dumps(doc))
    return path


def _mtus(cfg_path: Path) -> dict[str, int | None]:
    cfg = load(cfg_path)
    gw, svc = tenant_links(cfg, cfg.tenants[0])
    return {link.name: link.mtu for link in (*gw, *svc)}


def test_gateway_links_carry_what_the_tunnel_carries(tmp_path: Path) -> None:
    # VXLAN port and native link: 1350; translated service link: 20 more (IPv6 header).
    assert _mtus(_gateway(tmp_path)) == {
        "vx-acme": 1350, "sl-acme": 1370, "nl-acme": 1350, "acme": 1370, "n-acme": 1350,
    }  # fmt: skip
    assert _mtus(_gateway(tmp_path, mtu=1620))["sl-acme"] == 1520  # full frames fit


def test_plain_vxlan_keeps_the_lan_mtu(tmp_path: Path) -> None:
    doc = {
        "underlay": {"address": "fd63:6a62::2"},
        "state_dir": "/nonexistent/state",
        "tenants": {"acme": {"vni": 7, "appliance": "fd63:6a62:1::2"}},
    }
    path = tmp_path / "gw.json"
    path.write_text(json.dumps(doc))
    assert _mtus(path)["vx-acme"] == 1500 and _mtus(path)["sl-acme"] == 1520


def test_wireguard_mtu_below_ipv6_minimum_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="mtu"):
        load(_gateway(tmp_path, mtu=1349))
    with pytest.raises(SettingsError, match=r"wireguard\.mtu"):
        load_text(
            render_template("::", 8443, "[::1]:51820").replace("mtu = 1420", "mtu = 1300"),
            Path("g.toml"),
        )


def test_control_plane_default_matches_the_data_plane() -> None:
    settings = load_text(render_template("::", 8443, "[::1]:51820"), Path("g.toml"))
    assert settings.wireguard.mtu == DEFAULT_WIREGUARD_MTU


def test_appliance_sizes_wireguard_from_the_gateway_and_keeps_the_lan_mtu(tmp_path: Path) -> None:
    config = TunnelConfig(
        vni=101,
        overlay_address=ipaddress.IPv6Address("fd63:6a62:77::100"),
        gateway_overlay_address=ipaddress.IPv6Address("fd63:6a62:77::1"),
        gateway_wireguard_public_key=KEY,
        gateway_endpoint="[fd63:6a62:1::1]:51820",
        wireguard_mtu=1412,
    )
    request = TunnelRequest(config, tmp_path / "k", "br-lan", "cjb-vx0", mtu=1500)
    spec = WireGuardTunnelBuilder(FakeKernel(), "ns", "wgx0").network_spec(request)
    (ns,) = spec.namespaces
    assert ns.link("wgx0").mtu == 1412
    assert ns.link("cjb-vx0").mtu == 1500
    # An appliance enrolled before the field existed gets the default.
    old = json.loads(config.model_dump_json(exclude={"wireguard_mtu"}))
    assert TunnelConfig.model_validate(old).wireguard_mtu == DEFAULT_WIREGUARD_MTU


def test_default_mtu_stays_off_the_wire_for_older_appliances(tmp_path: Path) -> None:
    base = {
        "vni": 101,
        "overlay_address": "fd63:6a62:77::100",
        "gateway_overlay_address": "fd63:6a62:77::1",
        "gateway_wireguard_public_key": KEY,
        "gateway_endpoint": "[fd63:6a62:1::1]:51820",
    }
    # Images built before the field forbid unknown keys: the default is not sent at all.
    assert "wireguard_mtu" not in json.loads(TunnelConfig.model_validate(base).model_dump_json())
    sent = json.loads(TunnelConfig.model_validate(base | {"wireguard_mtu": 1412}).model_dump_json())
    assert sent["wireguard_mtu"] == 1412
    # And from now on an appliance ignores what a newer gateway adds.
    assert TunnelConfig.model_validate(base | {"added_later": 1}).wireguard_mtu == 1420
