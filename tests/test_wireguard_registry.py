"""The data plane's desired state from the control plane's registry (real SQLite, no root):
an enrolled device becomes a tenant with its WireGuard peer; revoking it takes both away,
and the generation the daemon polls moves each time."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
from pathlib import Path

import pytest

from cjb.common.wireguard import generate_private_key, public_key
from cjb.gateway.control.registry import Allocation, EnrollmentRecord, Registry
from cjb.gateway.dataplane.config import ConfigFileError, load
from cjb.gateway.dataplane.desired import RegistrySource
from cjb.gateway.dataplane.wg_transport import desired_device

PLAN = Allocation(
    first_vni=100,
    overlay_prefix=ipaddress.IPv6Network("fd63:6a62:77::/64"),
    first_device=ipaddress.IPv6Address("fd63:6a62:77::100"),
)


def _enroll(reg: Registry, serial: str, tenant: str, wg_key: str) -> None:
    factory = base64.b64encode(os.urandom(32)).decode()
    assert reg.add_device(serial, factory, tenant, "cjb-appliance")
    reg.commit_enrollment(
        EnrollmentRecord(
            serial=serial,
            factory_public_key=factory,
            wireguard_public_key=wg_key,
            service_ipv4=ipaddress.IPv4Address("192.168.0.100"),
            lan_prefix="192.168.0.0/24",
            lan_router=None,
            lan_mtu=1500,
            lan_json="{}",
            cert_fingerprint=os.urandom(32).hex(),
            cert_serial_number=int.from_bytes(os.urandom(7), "big"),
            cert_not_after=2e9,
            peer=None,
        ),
        PLAN,
    )


def test_registry_is_the_desired_state(tmp_path: Path) -> None:
    db = tmp_path / "registry.sqlite3"
    Registry.open(db).close()
    cfg_path = tmp_path / "gw.json"
    cfg_path.write_text(
        json.dumps(
            {
                "wireguard": {"ifname": "wgtest0", "private_key_file": "/nonexistent"},
                "registry": {"path": str(db), "native_ipv6": False},
                "state_dir": str(tmp_path / "state"),
            }
        )
    )
    source = RegistrySource(load(cfg_path))
    try:
        assert source.config().tenants == ()
        g0 = source.generation()
        keys = {
            "acme": public_key(generate_private_key()),
            "bravo": public_key(generate_private_key()),
        }
        with Registry.open(db) as reg:  # another process's connection, as with `serve`
            _enroll(reg, "SN-1", "acme", keys["acme"])
            _enroll(reg, "SN-2", "bravo", keys["bravo"])
        g1 = source.generation()
        assert g1 != g0
        tenants = {t.name: t for t in source.config().tenants}
        assert sorted(tenants) == ["acme", "bravo"]
        acme = tenants["acme"]
        assert acme.wireguard_public_key == keys["acme"] and not acme.native_ipv6
        assert acme.appliance in PLAN.overlay_prefix and acme.vni >= PLAN.first_vni
        assert tenants["bravo"].vni != acme.vni and tenants["bravo"].appliance != acme.appliance
        peers = desired_device(source.config(), generate_private_key()).peers
        assert {p.public_key for p in peers} == set(keys.values())

        with Registry.open(db) as reg:
            reg.revoke("SN-1", "stolen", by="test")
        assert source.generation() != g1
        cfg = source.config()
        assert [t.name for t in cfg.tenants] == ["bravo"]
        assert [p.public_key for p in desired_device(cfg, generate_private_key()).peers] == [
            keys["bravo"]
        ]
    finally:
        source.close()


def test_a_missing_registry_is_an_error_not_an_empty_one(tmp_path: Path) -> None:
    cfg_path = tmp_path / "gw.json"
    cfg_path.write_text(
        json.dumps(
            {
                "wireguard": {"ifname": "wgtest0", "private_key_file": "/nonexistent"},
                "registry": {"path": str(tmp_path / "typo.sqlite3")},
            }
        )
    )
    with pytest.raises(ConfigFileError, match="cjb gateway init"):
        RegistrySource(load(cfg_path))
    assert not (tmp_path / "typo.sqlite3").exists()
