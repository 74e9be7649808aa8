"""The gateway's WireGuard transport and the appliance's WireGuard tunnel builder, for real.

    cjbwgg<run>-ap (appliance)                    cjbwgg<run>-gw (gateway)
      br-lan ── cjb-vx0 (VXLAN 101)                 vx-t1 (VXLAN 101) ── sl-t1 ══ veth ══ t1
                  │ fd63:6a62:77::100                  │ fd63:6a62:77::1        (service ns)
      wga<run> (WireGuard) ════════════════════════ wgg<run> (WireGuard, :51820)
      eth0 fd63:6a62:1::2/64 ───────── veth ──────── eth0 fd63:6a62:1::1/64

Checks: reconcile with WireGuard peers is idempotent (a second pass changes nothing);
handshake and overlay ping; VXLAN frames from the appliance arrive and pass the VNI
binding; a peer the config does not know is removed; removing the tenant (revocation)
removes its peer and port, and the appliance can no longer reach the gateway.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cjb.appliance.tunnel import TunnelRequest
from cjb.appliance.tunnel_wireguard import WireGuardTunnelBuilder
from cjb.common.control.protocol import TunnelConfig
from cjb.common.netlink import (
    Bridge,
    Existing,
    Link,
    Namespace,
    NetworkSpec,
    Veth,
    VethPeer,
    apply,
    netns,
)
from cjb.common.netlink import remove as remove_spec
from cjb.common.netlink.nft import counters
from cjb.common.netlink.real import RealKernel
from cjb.common.wireguard import DeviceSpec, PeerSpec, WireGuard, generate_private_key, public_key
from cjb.gateway.dataplane.config import load
from cjb.gateway.dataplane.daemon import reconcile
from cjb.gateway.dataplane.vni_binding import TABLE_FAMILY, TABLE_NAME
from cjb.gateway.dataplane.wg_transport import peer_status

pytestmark = [pytest.mark.root]

NO_DAD = (("net/ipv6/conf/all/accept_dad", "0"), ("net/ipv6/conf/default/accept_dad", "0"))


def _ping(ns: str, target: str, count: int = 1, wait: float = 1) -> bool:
    with netns(ns):
        proc = subprocess.run(
            ["ping", "-6", "-c", str(count), "-W", str(wait), target],
            capture_output=True,
            check=False,
        )
    return proc.returncode == 0


@dataclass
class Rig:
    run: str
    tmp: Path
    gw_key: str
    ap_key: str
    wg: WireGuard

    @property
    def prefix(self) -> str:
        return f"cjbwgg{self.run}-"

    @property
    def gw(self) -> str:
        return self.prefix + "gw"

    @property
    def ap(self) -> str:
        return self.prefix + "ap"

    @property
    def svc(self) -> str:
        return self.prefix + "svc"

    @property
    def gw_if(self) -> str:
        return f"wgg{self.run}"

    @property
    def ap_if(self) -> str:
        return f"wga{self.run}"

    def net_spec(self) -> NetworkSpec:
        def addr(a: str) -> tuple[ipaddress.IPv6Interface, ...]:
            return (ipaddress.IPv6Interface(a),)

        return NetworkSpec(
            "wggtest",
            (
                Namespace(
                    self.gw,
                    (
                        Link("lo", Existing()),
                        Link("eth0", Veth("eth0", self.ap), addresses=addr("fd63:6a62:1::1/64")),
                    ),
                    owned=True,
                    sysctls=NO_DAD,
                ),
                Namespace(
                    self.ap,
                    (
                        Link("lo", Existing()),
                        Link("eth0", VethPeer("eth0"), addresses=addr("fd63:6a62:1::2/64")),
                        Link("br-lan", Bridge(), sysctls=(("ipv6.disable_ipv6", "1"),)),
                    ),
                    owned=True,
                    sysctls=NO_DAD,
                ),
                Namespace(self.svc, (Link("lo", Existing()),), owned=True, sysctls=NO_DAD),
            ),
            namespace_prefix=self.prefix,
        )

    def write_config(self, with_tenant: bool = True) -> Path:
        key_file = self.tmp / "wg.key"
        if not key_file.exists():
            key_file.write_text(self.gw_key + "\n")
            key_file.chmod(0o600)
        tenants = {}
        if with_tenant:
            tenants["t1"] = {
                "vni": 101,
                "appliance": "fd63:6a62:77::100",
                "wireguard_public_key": public_key(self.ap_key),
                "native_ipv6": False,
            }
        path = self.tmp / "gateway.json"
        path.write_text(
            json.dumps(
                {
                    "wireguard": {
                        "ifname": self.gw_if,
                        "private_key_file": str(key_file),
                        "listen_port": 51820,
                        "address": "fd63:6a62:77::1/64",
                    },
                    "service_netns": self.svc,
                    "state_dir": str(self.tmp / "gw"),
                    "tenants": tenants,
                }
            )
        )
        return path

    def request(self) -> TunnelRequest:
        key_file = self.tmp / "ap-wg.key"
        if not key_file.exists():
            key_file.write_text(self.ap_key + "\n")
            key_file.chmod(0o600)
        return TunnelRequest(
            config=TunnelConfig(
                vni=101,
                overlay_address=ipaddress.IPv6Address("fd63:6a62:77::100"),
                gateway_overlay_address=ipaddress.IPv6Address("fd63:6a62:77::1"),
                gateway_wireguard_public_key=public_key(self.gw_key),
                gateway_endpoint="[fd63:6a62:1::1]:51820",
                keepalive_seconds=5,
            ),
            wireguard_private_key_file=key_file,
            bridge="br-lan",
            port_name="cjb-vx0",
            mtu=1500,
        )

    def gw_reconcile(self, path: Path) -> list[str]:
        with netns(self.gw):
            return reconcile(load(path), self.wg)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces, tun devices and nftables tables")
    for program in ("nft", "ping"):
        if shutil.which(program) is None:
            pytest.skip(f"{program} missing: apt-get install -y --no-install-recommends ...")
    if shutil.which("wireguard-go") is None and not os.path.isdir("/sys/module/wireguard"):
        pytest.skip("no WireGuard: apt-get install -y --no-install-recommends wireguard-go")
    r = Rig(
        secrets.token_hex(2), tmp_path, generate_private_key(), generate_private_key(), WireGuard()
    )
    try:
        with RealKernel() as kernel:
            apply(kernel, r.net_spec())
        yield r
    finally:
        r.wg.delete(r.gw, r.gw_if)
        r.wg.delete(r.ap, r.ap_if)
        with RealKernel() as kernel:
            remove_spec(kernel, r.net_spec())
        assert not [n for n in os.listdir("/run/netns") if n.startswith(r.prefix)]
        assert not list(Path("/var/run/wireguard").glob(f"wg?{r.run}.sock"))


def _send_broadcast(ns: str, ifname: str, count: int) -> None:
    frame = b"\xff" * 6 + bytes.fromhex("02000000aa01") + b"\x88\xb5" + b"cjb-wg-test".ljust(46)
    with netns(ns), socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((ifname, 0))
        for _ in range(count):
            s.send(frame)


def test_gateway_and_appliance_over_wireguard(rig: Rig) -> None:
    cfg_path = rig.write_config()
    first = rig.gw_reconcile(cfg_path)
    assert any("create wireguard interface" in c for c in first)
    assert any("add peer" in c for c in first)
    assert rig.gw_reconcile(cfg_path) == []  # idempotent, WireGuard peers included

    with RealKernel() as kernel:
        gw_links = kernel.links(rig.gw)
        assert gw_links["vx-t1"].vxlan == (101, "fd63:6a62:77::1", "fd63:6a62:77::100", 4789)
        assert ipaddress.ip_interface("fd63:6a62:77::1/64") in kernel.addresses(rig.gw, rig.gw_if)
        builder = WireGuardTunnelBuilder(kernel, rig.ap, rig.ap_if, rig.wg)
        request = rig.request()
        assert builder.ensure(request)
        assert builder.ensure(request) == []
        links = kernel.links(rig.ap)
        assert links["cjb-vx0"].master == "br-lan"
        # WireGuard sized by the gateway for a 1500-byte WAN path; the LAN port keeps 1500.
        assert links[rig.ap_if].mtu == request.config.wireguard_mtu == 1420
        assert links["cjb-vx0"].mtu == request.mtu == 1500
        assert links["cjb-vx0"].vxlan == (101, "fd63:6a62:77::100", "fd63:6a62:77::1", 4789)

        assert _ping(rig.ap, "fd63:6a62:77::1", count=3, wait=2)
        status = builder.status(request)
        assert status.up and status.on_bridge and status.last_handshake_age is not None
        with netns(rig.gw):
            peers = peer_status(rig.wg, load(cfg_path))
        assert peers["t1"]["up"] is True
        assert str(peers["t1"]["endpoint"]).startswith("[fd63:6a62:1::2]:")

        # L2 frames on the LAN bridge cross inside WireGuard and pass the VNI binding.
        before = counters(rig.gw, TABLE_FAMILY, TABLE_NAME).get("ok_t1", (0, 0))[0]
        _send_broadcast(rig.ap, "br-lan", 5)
        time.sleep(0.5)
        after = counters(rig.gw, TABLE_FAMILY, TABLE_NAME)["ok_t1"][0]
        assert after - before >= 5

        # A peer nobody asked for (drift) is removed by the next reconcile.
        stranger = public_key(generate_private_key())
        with netns(rig.gw):
            current = rig.wg.show(None, rig.gw_if)
            rig.wg.apply(
                None,
                rig.gw_if,
                DeviceSpec(
                    rig.gw_key,
                    51820,
                    (
                        *(PeerSpec(p.public_key, p.allowed_ips) for p in current.peers),
                        PeerSpec(stranger, (ipaddress.ip_network("fd63:6a62:77::999/128"),)),
                    ),
                ),
            )
        assert rig.gw_reconcile(cfg_path) == [f"{rig.gw_if}: remove peer {stranger[:8]}…"]

        # Revocation: the tenant leaves the desired state -> peer and port go, no traffic.
        gone = rig.gw_reconcile(rig.write_config(with_tenant=False))
        assert f"{rig.gw_if}: remove peer {public_key(rig.ap_key)[:8]}…" in gone
        assert "vx-t1" not in kernel.links(rig.gw)
        assert not _ping(rig.ap, "fd63:6a62:77::1", count=2, wait=1)

        assert builder.remove()
        assert "cjb-vx0" not in kernel.links(rig.ap) and rig.ap_if not in kernel.links(rig.ap)
