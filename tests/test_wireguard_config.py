"""Fast checks of the WireGuard transport's configuration: the gateway config model, the
kernel spec it yields, the private-key file rule, status rendering and lab names."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from cjb.common.netlink import Existing, Vxlan
from cjb.common.netlink.spec import IFNAMSIZ as IFNAMSIZ_SAFE
from cjb.common.wireguard import WireGuardError, generate_private_key, public_key
from cjb.gateway.dataplane.config import ConfigFileError, load
from cjb.gateway.dataplane.kernel_spec import gateway_spec
from cjb.gateway.dataplane.status import render
from cjb.gateway.dataplane.wg_transport import desired_device, read_private_key
from cjb.lab.topology import LabNames

KEY = public_key(generate_private_key())


def _write(tmp: Path, doc: dict[str, object]) -> Path:
    path = tmp / "gw.json"
    path.write_text(json.dumps(doc))
    return path


def _doc(**tenant: object) -> dict[str, object]:
    return {
        "wireguard": {"ifname": "wgtest0", "private_key_file": "/nonexistent"},
        "state_dir": "/nonexistent/state",
        "tenants": {
            "acme": {"vni": 7, "appliance": "fd63:6a62:77::100", "wireguard_public_key": KEY}
            | tenant
        },
    }


def test_wireguard_mode_spec_and_peers(tmp_path: Path) -> None:
    cfg = load(_write(tmp_path, _doc()))
    assert cfg.underlay_address == ipaddress.ip_address("fd63:6a62:77::1")
    (ns,) = gateway_spec(cfg).namespaces
    wg, vx = ns.links[0], ns.link("vx-acme")
    # The WireGuard interface is adopted (never created or deleted by netlink) and listed
    # first, so its overlay address exists before the VXLAN ports come up.
    assert wg.name == "wgtest0" and isinstance(wg.kind, Existing) and wg.mtu == 1420
    assert wg.addresses == (ipaddress.ip_interface("fd63:6a62:77::1/64"),)
    assert vx.kind == Vxlan(
        vni=7,
        local=ipaddress.ip_address("fd63:6a62:77::1"),
        remote=ipaddress.ip_address("fd63:6a62:77::100"),
        underlay=None,
    )
    device = desired_device(cfg, generate_private_key())
    assert [(p.public_key, p.allowed_ips) for p in device.peers] == [
        (KEY, (ipaddress.ip_network("fd63:6a62:77::100/128"),))
    ]
    assert device.listen_port == 51820


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_doc(wireguard_public_key=None), "wireguard_public_key is required"),
        (_doc(appliance="fd00::5"), "must be an overlay address"),
        (_doc(wireguard_public_key="short"), "wireguard_public_key"),
        ({"state_dir": "/nonexistent/state"}, "set `underlay`"),
    ],
)
def test_wireguard_mode_config_errors(tmp_path: Path, doc: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigFileError, match=message):
        load(_write(tmp_path, doc))


def test_private_key_file_must_be_0600_and_valid(tmp_path: Path) -> None:
    path = tmp_path / "private.key"
    key = generate_private_key()
    path.write_text(key + "\n")
    path.chmod(0o644)
    with pytest.raises(WireGuardError, match="chmod 600"):
        read_private_key(path)
    path.chmod(0o600)
    assert read_private_key(path) == key
    path.write_text("garbage\n")
    with pytest.raises(WireGuardError) as err:
        read_private_key(path)
    assert "garbage" not in str(err.value)
    with pytest.raises(WireGuardError, match="cjb gateway init"):
        read_private_key(tmp_path / "missing.key")


def test_status_shows_the_wireguard_peer() -> None:
    status = {
        "pid": 1,
        "updated": 100.0,
        "tenants": {
            "acme": {
                "vni": 7,
                "appliance": "fd63:6a62:77::100",
                "state": "running",
                "wireguard": {
                    "peer": "abcdefgh…",
                    "configured": True,
                    "up": True,
                    "endpoint": "[fd63:6a62:1::2]:4000",
                    "handshake_age_seconds": 3.2,
                    "rx_bytes": 10,
                    "tx_bytes": 20,
                },
            }
        },
    }
    text = render(status, Path("s.json"), now=100.5)
    assert (
        "  wireguard peer abcdefgh… up, endpoint [fd63:6a62:1::2]:4000, handshake 3s ago, "
        "rx 10 B, tx 20 B" in text
    )


def test_lab_wireguard_names_fit_and_carry_the_run_id() -> None:
    names = LabNames("1a2b")
    made = [names.wg_ifname("gateway")] + [names.wg_ifname(f"appliance{k}") for k in (1, 200)]
    assert made == ["wgl1a2bg", "wgl1a2ba1", "wgl1a2ba200"]
    assert all(len(n) <= IFNAMSIZ_SAFE for n in made)


def test_dataplane_metrics_from_the_status_file(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from cjb.gateway.dataplane.metrics import StatusFileCollector

    path = tmp_path / "status.json"
    registry = CollectorRegistry()
    registry.register(StatusFileCollector(path, clock=lambda: 100.5))
    assert b"cjb_dataplane_up 0.0" in generate_latest(registry)  # no file yet: no error
    status = {
        "updated": 100.0,
        "tenants": {
            "acme": {
                "router": {
                    "ports": {"tunnel": {"rx_frames": 3, "rx_bytes": 300}},
                    "drops": {"mld": 2},
                },
                "vni_binding": {"vni_spoofed": 4},
                "wireguard": {"up": True, "handshake_age_seconds": 7.5, "rx_bytes": 9},
            }
        },
    }
    path.write_text(json.dumps(status))
    text = generate_latest(registry).decode()
    for line in (
        "cjb_dataplane_up 1.0",
        'cjb_dataplane_frames_total{direction="rx",port="tunnel",tenant="acme"} 3.0',
        'cjb_dataplane_bytes_total{direction="rx",port="tunnel",tenant="acme"} 300.0',
        'cjb_dataplane_drops_total{reason="mld",tenant="acme"} 2.0',
        'cjb_vni_spoofed_total{tenant="acme"} 4.0',
        'cjb_tunnel_up{tenant="acme"} 1.0',
        'cjb_tunnel_last_handshake_age_seconds{tenant="acme"} 7.5',
        'cjb_tunnel_bytes_total{direction="rx",tenant="acme"} 9.0',
    ):
        assert line in text, line


def test_recreated_interface_is_seeded_with_last_endpoints(tmp_path: Path) -> None:
    from cjb.common.wireguard.model import Endpoint
    from cjb.gateway.dataplane.wg_transport import previous_endpoints

    cfg = load(_write(tmp_path, _doc()))
    status = tmp_path / "status.json"
    status.write_text(
        json.dumps(
            {
                "tenants": {
                    "acme": {"wireguard": {"endpoint": "[fd63:6a62:1::2]:4000"}},
                    "gone": {"wireguard": {"endpoint": "not an endpoint"}},
                    "never": {"wireguard": {"endpoint": None}},
                }
            }
        )
    )
    seeds = previous_endpoints(status)
    assert seeds == {"acme": Endpoint(ipaddress.ip_address("fd63:6a62:1::2"), 4000)}
    assert previous_endpoints(tmp_path / "missing.json") == {}
    (peer,) = desired_device(cfg, generate_private_key(), seeds).peers
    assert peer.endpoint == seeds["acme"] and peer.keepalive == 25
    (peer,) = desired_device(cfg, generate_private_key()).peers
    assert peer.endpoint is None and peer.keepalive == 0
