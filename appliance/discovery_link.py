"""Drives the discovery relay (appliance/discovery) from the agent's state.

The agent calls `sync` every tick with what it knows: the enrolled config, its own LAN
address, whether the tunnel is up, whether the tunnel port was just re-created. The relay
announces the catalog while the tunnel is up and says goodbye when it goes down. The relay
is optional: without zeroconf, without an own address on the LAN, or when it fails, the
agent goes on and `note` says why discovery is off.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from cjb.common.control.protocol import CatalogService, DeviceConfig

log = logging.getLogger("cjb.appliance")
RETRY_AFTER = 30.0  # seconds between attempts to start a relay that failed


class DiscoveryLink:
    def __init__(
        self, bridge: str, lan_ports: tuple[str, ...], tunnel_port: str, enabled: bool = True
    ) -> None:
        self.bridge = bridge
        self.lan_ports = lan_ports
        self.tunnel_port = tunnel_port
        self.enabled = enabled
        self.note = "off: not enrolled" if enabled else "off (config: discovery false)"
        self._relay: Any = None
        self._key: tuple[object, ...] | None = None
        self._catalog: list[CatalogService] = []
        self._up = False
        self._retry_at = 0.0

    def sync(
        self,
        now: float,
        config: DeviceConfig | None,
        lan_address: ipaddress.IPv4Address | None,
        tunnel_up: bool,
        port_recreated: bool,
    ) -> None:
        if not self.enabled:
            return
        if config is None:
            self.stop("off: not enrolled")
            return
        key = (config.tenant, config.service_ipv4, tuple(config.cloud_macs), lan_address)
        if self._relay is not None and key != self._key:
            self.stop("restarting: tenant, service address or LAN address changed")
        if self._relay is None and not self._start(now, config, lan_address, key):
            return
        try:
            if config.catalog != self._catalog:
                self._relay.update_catalog(config.catalog)
                self._catalog = list(config.catalog)
            if port_recreated:
                self._relay.refresh_ports()
            if tunnel_up != self._up:
                if tunnel_up:
                    self._relay.tunnel_up()
                else:
                    self._relay.tunnel_down()
                self._up = tunnel_up
            self.note = (
                f"on: {len(self._catalog)} service(s), tunnel {'up' if self._up else 'down'}"
            )
        except Exception as exc:  # the relay is optional: never let it stop the agent
            log.warning("discovery relay failed: %s", exc)
            self.stop(f"off: relay failed ({exc}); retrying")
            self._retry_at = now + RETRY_AFTER

    def _start(
        self,
        now: float,
        config: DeviceConfig,
        lan_address: ipaddress.IPv4Address | None,
        key: tuple[object, ...],
    ) -> bool:
        if now < self._retry_at:
            return False
        if lan_address is None:
            self.note = f"off: {self.bridge} has no IPv4 address to announce from"
            return False
        try:
            from cjb.appliance.discovery.relay import DiscoveryRelay, RelayConfig
        except ImportError as exc:
            self.note = f"off: {exc.name} is not installed (pip install 'cjb[appliance]')"
            return False
        try:
            relay = DiscoveryRelay(
                RelayConfig.for_device(
                    config,
                    lan_ifname=self.bridge,
                    lan_address=lan_address,
                    lan_ports=self.lan_ports,
                    tunnel_ifname=self.tunnel_port,
                ),
                [],
            )
            relay.start()
        except Exception as exc:  # RelayError, OSError: say so, try again later
            log.warning("discovery relay did not start: %s", exc)
            self.note = f"off: relay did not start ({exc}); retrying"
            self._retry_at = now + RETRY_AFTER
            return False
        self._relay, self._key, self._catalog, self._up = relay, key, [], False
        return True

    def stop(self, note: str = "off: stopped") -> None:
        relay, self._relay = self._relay, None
        self.note = note
        self._up = False
        if relay is not None:
            try:
                relay.stop()  # goodbye packets first (RFC 6762 §10.1)
            except Exception as exc:
                log.warning("discovery relay stop failed: %s", exc)

    def counters(self) -> dict[str, int]:
        if self._relay is None:
            return {}
        try:
            gate = self._relay.status().get("gate", {})
        except Exception:
            return {}
        return {f"discovery_{k}": int(v) for k, v in gate.items() if isinstance(v, int)}
