"""The gateway's per-tenant broadcast/multicast limit (gateway/dataplane/vni_binding.py) on
a real kernel: nftables in a namespace of our own, VXLAN packets from the bound appliance
address. Group frames above the limit are dropped and counted; unicast is never limited."""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import labkit
import pytest

from cjb.common.netlink import netns
from cjb.common.netlink.nft import apply_table, counters
from cjb.gateway.dataplane.config import load
from cjb.gateway.dataplane.vni_binding import (
    TABLE_FAMILY,
    TABLE_NAME,
    binding_table,
    tenant_counters,
)

pytestmark = pytest.mark.root

GATEWAY, APPLIANCE = "fd00:67::1", "fd00:67::2"


@pytest.fixture
def pair() -> Iterator[tuple[str, str]]:
    labkit.require("nft", "ip")
    run = uuid.uuid4().hex[:6]
    gw, ap = f"cjbgl{run}-gw", f"cjbgl{run}-ap"
    for ns in (gw, ap):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(
            ["ip", "link", "add", "v0", "netns", gw, "type", "veth", "peer", "v1", "netns", ap],
            check=True,
        )
        for ns, dev, addr in ((gw, "v0", GATEWAY), (ap, "v1", APPLIANCE)):
            subprocess.run(
                ["ip", "-n", ns, "addr", "add", f"{addr}/64", "dev", dev, "nodad"], check=True
            )
            subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
        yield gw, ap
    finally:
        for ns in (gw, ap):
            subprocess.run(["ip", "netns", "del", ns], check=False)


def _vxlan(vni: int, dst_mac: bytes) -> bytes:
    inner = dst_mac + bytes.fromhex("02000000aa01") + b"\x88\xb5" + b"x" * 46
    return b"\x08\x00\x00\x00" + vni.to_bytes(3, "big") + b"\x00" + inner  # RFC 7348 §5


def test_group_frames_over_the_limit_are_dropped_and_counted(
    pair: tuple[str, str], tmp_path: Path
) -> None:
    gw, ap = pair
    doc = {
        "underlay": {"address": GATEWAY},
        "state_dir": str(tmp_path),
        "group_limit": {"per_second": 50, "burst": 20},
        "tenants": {"acme": {"vni": 7, "appliance": APPLIANCE}},
    }
    path = tmp_path / "gw.json"
    path.write_text(json.dumps(doc))
    apply_table(gw, binding_table(load(path)))
    with netns(ap), socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        for mac in (b"\xff" * 6, bytes.fromhex("01005e0000fb"), bytes.fromhex("333300000001")):
            for _ in range(100):  # 300 group frames in well under a second
                s.sendto(_vxlan(7, mac), (GATEWAY, 4789))
        for _ in range(300):
            s.sendto(_vxlan(7, bytes.fromhex("020000000064")), (GATEWAY, 4789))
    got = tenant_counters(counters(gw, TABLE_FAMILY, TABLE_NAME), "acme")
    limited, accepted = got["group_limited"], got["vxlan_accepted"]
    assert limited + accepted == 600, got
    # 20 of burst plus at most the refill while sending: most of the 300 were dropped...
    assert 200 <= limited <= 280, got
    # ...and every unicast frame passed.
    assert accepted >= 300, got
