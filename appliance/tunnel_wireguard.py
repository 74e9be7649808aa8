"""The production `TunnelBuilder`: WireGuard to the gateway, VXLAN inside it.

    LAN ── br-lan ── cjb-vx0 (VXLAN, VNI = tenant's)      local  = our overlay address
                        │                                  remote = gateway overlay address
                     cjb-wg0 (WireGuard) overlay/64 ═══ UDP ═══► gateway endpoint

The one WireGuard peer is the gateway, with allowed IPs = the gateway's overlay /128 only:
the appliance reaches nothing else through the tunnel. The WireGuard interface's MTU comes
from the gateway (`TunnelConfig.wireguard_mtu`, sized for the WAN path: common/tunnel_mtu.py),
so its packets cross a 1,500-byte WAN even where big packets vanish without an ICMP answer.
The VXLAN port keeps the LAN's MTU: a LAN packet too big for the tunnel meets the kernel's
bridged-tunnel PMTU check, which answers DF packets with fragmentation-needed (RFC 1191).

The interface name must be unique on the machine when wireguard-go runs (its socket
directory is shared by all namespaces): the lab passes one with its run id.
"""

from __future__ import annotations

import ipaddress
import os
import time
from pathlib import Path

from cjb.appliance.tunnel import (
    TUNNEL_OWNER,
    TunnelError,
    TunnelRequest,
    TunnelStatus,
    endpoint_host,
    lan_port,
    remove_links,
    resolve,
)
from cjb.common.netlink import (
    Existing,
    Kernel,
    Link,
    Namespace,
    NetlinkError,
    NetworkSpec,
    Vxlan,
    apply,
)
from cjb.common.wireguard import DeviceSpec, PeerSpec, WireGuard, WireGuardError
from cjb.common.wireguard.model import Endpoint

# WireGuard rejects a session older than REJECT_AFTER_TIME (180 s, whitepaper §6.1);
# with keepalives a live tunnel handshakes every 2 minutes.
HANDSHAKE_FRESH = 180.0
DEFAULT_IFNAME = "cjb-wg0"
# Where several agents share one machine (the lab), each needs its own name: the lab sets
# this for every agent it starts.
IFNAME_ENV = "CJB_WIREGUARD_IFNAME"


class WireGuardTunnelBuilder:
    def __init__(
        self,
        kernel: Kernel,
        ns: str | None = None,
        ifname: str | None = None,
        wg: WireGuard | None = None,
        log_file: Path | None = None,
    ) -> None:
        self.kernel = kernel
        self.ns = ns
        self.ifname = ifname or os.environ.get(IFNAME_ENV) or DEFAULT_IFNAME
        self.log_file = log_file
        self._wg = wg
        self._endpoint: Endpoint | None = None

    @property
    def wg(self) -> WireGuard:
        if self._wg is None:
            self._wg = WireGuard()  # picks the kernel module or wireguard-go, and logs which
        return self._wg

    def _resolve_endpoint(self, request: TunnelRequest) -> Endpoint:
        if self._endpoint is None:
            text = request.config.gateway_endpoint
            host = endpoint_host(text)
            port = int(text.rpartition(":")[2])
            self._endpoint = Endpoint(resolve(host), port)
        return self._endpoint

    def device_spec(self, request: TunnelRequest) -> DeviceSpec:
        cfg = request.config
        try:
            private_key = request.private_key()
        except OSError as exc:
            raise TunnelError(
                f"{request.wireguard_private_key_file}: cannot read the WireGuard key: "
                f"{exc.strerror}"
            ) from None
        gateway = PeerSpec(
            cfg.gateway_wireguard_public_key,
            (ipaddress.ip_network(f"{cfg.gateway_overlay_address}/128"),),
            self._resolve_endpoint(request),
            # NAT mappings on consumer routers expire after ~30 s of silence (RFC 4787
            # REQ-5 asks for 2 min, many do less): keepalives hold them open.
            keepalive=cfg.keepalive_seconds,
        )
        return DeviceSpec(private_key, None, (gateway,))

    def network_spec(self, request: TunnelRequest) -> NetworkSpec:
        cfg = request.config
        overlay = ipaddress.IPv6Interface(f"{cfg.overlay_address}/{cfg.overlay_prefix_len}")
        links = (
            Link(request.bridge, Existing()),
            # Before the VXLAN port: its local address must be here when the port comes up.
            Link(self.ifname, Existing(), mtu=cfg.wireguard_mtu, addresses=(overlay,)),
            lan_port(
                request,
                Vxlan(
                    vni=cfg.vni,
                    local=cfg.overlay_address,
                    remote=cfg.gateway_overlay_address,
                    port=cfg.vxlan_port,
                ),
            ),
        )
        return NetworkSpec(TUNNEL_OWNER, (Namespace(self.ns, links),))

    def ensure(self, request: TunnelRequest) -> list[str]:
        changes: list[str] = []
        try:
            device = self.device_spec(request)
            if self.wg.ensure(self.ns, self.ifname, self.log_file):
                changes.append(f"create wireguard interface {self.ifname}")
            changes += [f"{self.ifname}: {c}" for c in self.wg.apply(self.ns, self.ifname, device)]
            changes += apply(self.kernel, self.network_spec(request))
        except (WireGuardError, NetlinkError) as exc:
            raise TunnelError(str(exc)) from exc
        return changes

    def reconnect(self, request: TunnelRequest) -> list[str]:
        # The gateway's name may resolve elsewhere now; setting the endpoint again also
        # makes WireGuard send a fresh handshake initiation right away.
        self._endpoint = None
        return self.ensure(request)

    def vxlan_source(
        self, request: TunnelRequest
    ) -> tuple[str | None, ipaddress.IPv4Address | ipaddress.IPv6Address]:
        return self.ifname, request.config.gateway_overlay_address

    def status(self, request: TunnelRequest) -> TunnelStatus:
        port = self.kernel.links(self.ns).get(request.port_name)
        if port is None:
            return TunnelStatus(False, False, request.port_name, detail="port missing")
        on_bridge = port.master == request.bridge
        try:
            device = self.wg.show(self.ns, self.ifname)
        except WireGuardError as exc:
            return TunnelStatus(False, on_bridge, request.port_name, detail=str(exc))
        peer = device.peer(request.config.gateway_wireguard_public_key)
        if peer is None:
            return TunnelStatus(False, on_bridge, request.port_name, detail="no gateway peer")
        age = peer.handshake_age(time.time())
        fresh = age is not None and age < HANDSHAKE_FRESH
        detail = f"wireguard {self.ifname} -> {peer.endpoint}, vxlan vni {request.config.vni}, " + (
            "no handshake yet" if age is None else f"handshake {age:.0f}s ago"
        )
        return TunnelStatus(
            up=port.up and fresh,
            on_bridge=on_bridge,
            port=request.port_name,
            last_handshake_age=age,
            detail=detail,
            counters={
                "wg_rx_bytes": peer.rx_bytes,
                "wg_tx_bytes": peer.tx_bytes,
                # LAN packets bigger than the tunnel carries and not DF (a DF one gets
                # fragmentation-needed instead): VTEPs never fragment (RFC 7348 §4.3).
                "vxlan_tx_errors": port.tx_errors,
            },
        )

    def remove(self) -> list[str]:
        changes = remove_links(self.kernel, self.ns)
        try:
            if self.wg.exists(self.ns, self.ifname):
                self.wg.delete(self.ns, self.ifname)
                changes.append(f"delete wireguard interface {self.ifname}")
        except WireGuardError as exc:
            raise TunnelError(str(exc)) from exc
        return changes
