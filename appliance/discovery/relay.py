"""The appliance's discovery relay: the IO adapter around the sans-IO parts.

  - cloud services announced on the LAN with python-zeroconf (A record = the tenant's IPv4
    service address), withdrawn with goodbye packets (TTL 0, RFC 6762 §10.1) when the
    tunnel goes down, a service leaves the catalog, or the relay stops;
  - SSDP: M-SEARCH answered and NOTIFY alive/byebye sent for the catalog's UPnP devices
    (`ssdp.SsdpAdvertiser`);
  - the WAN gate (`gate.DiscoveryGate`): AF_PACKET on the LAN ports and the tunnel port,
    with the nftables rules of `nft_rules` keeping discovery UDP off the bridge's own path.

One asyncio loop, in one thread the relay owns (the agent that runs it is threaded); every
public method is safe to call from the agent's thread. Integration (agent)::

    relay = DiscoveryRelay(RelayConfig(...), device_config.catalog)
    relay.start()              # after the LAN bridge exists
    relay.tunnel_up()          # tunnel established: announce
    relay.update_catalog(new)  # config_version bumped
    relay.tunnel_down()        # WAN lost: goodbye packets, nothing announced
    relay.refresh_ports()      # the tunnel port was re-created (new ifindex)
    relay.stop()               # agent exit
    relay.status()             # counters for `cjb appliance status` / heartbeats
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import logging
import random
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from zeroconf import IPVersion, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

from cjb.appliance.discovery import nft_rules
from cjb.appliance.discovery.gate import DiscoveryGate
from cjb.appliance.discovery.policy import AllowList
from cjb.appliance.discovery.ssdp import Outgoing, SsdpAdvertiser, devices_for
from cjb.common.control.protocol import CatalogService, DeviceConfig
from cjb.common.packet.ethernet import parse_mac

log = logging.getLogger("cjb.appliance.discovery")

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
BATCH = 256
RCVBUF = 1 << 20  # a storm is rate-limited anyway; legitimate bursts must not be lost
SO_ATTACH_FILTER = 26
CAPTURE_FILTER = "udp port 5353 or udp port 1900"


class RelayError(Exception):
    """The relay could not start; the message names the cause and the fix."""


@dataclass(frozen=True)
class RelayConfig:
    tenant: str
    service_ipv4: IPv4Address  # what LAN clients use for the cloud services
    lan_ifname: str  # the LAN bridge, e.g. "br-lan"
    lan_address: IPv4Address  # the appliance's own address on it: source of announcements
    lan_ports: tuple[str, ...] = ()  # bridge ports on the LAN side (gate)
    tunnel_ifname: str | None = None  # the tunnel port on the bridge; None: no gate
    allow: AllowList = field(default_factory=AllowList)
    wan_pps: float = 20.0  # discovery frames per second onto the WAN (and back), average
    wan_burst: float = 40.0
    cloud_macs: frozenset[bytes] = frozenset()
    host_label: str = "cjb-cloud"  # "<label>.local." is the cloud host's mDNS name
    ssdp: bool = True
    apply_nft: bool = True  # install the bridge rules of nft_rules (needs the gate)

    @classmethod
    def for_device(
        cls,
        device: DeviceConfig,
        *,
        lan_ifname: str,
        lan_address: IPv4Address,
        lan_ports: tuple[str, ...] = (),
        tunnel_ifname: str | None = None,
        **settings: Any,
    ) -> RelayConfig:
        """The relay's config from the enrolled DeviceConfig plus the agent's LAN facts."""
        return cls(
            tenant=device.tenant,
            service_ipv4=device.service_ipv4,
            lan_ifname=lan_ifname,
            lan_address=lan_address,
            lan_ports=lan_ports,
            tunnel_ifname=tunnel_ifname,
            cloud_macs=frozenset(parse_mac(m) for m in device.cloud_macs),
            **settings,
        )


class DiscoveryRelay:
    def __init__(
        self,
        config: RelayConfig,
        catalog: list[CatalogService],
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._catalog: list[CatalogService] = []
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - SSDP response jitter, not crypto
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._zc: AsyncZeroconf | None = None
        self._registered: dict[str, tuple[ServiceInfo, CatalogService]] = {}
        self._up = False
        self._ssdp = SsdpAdvertiser(self._rng, clock(), boot_id=int(time.time()) & 0x7FFFFFFF)
        self._ssdp_sock: socket.socket | None = None
        self._ssdp_timer: asyncio.TimerHandle | None = None
        self._gate = DiscoveryGate(
            config.allow,
            wan_pps=config.wan_pps,
            wan_burst=config.wan_burst,
            now=clock(),
            cloud_macs=config.cloud_macs,
        )
        self._gate_socks: dict[str, socket.socket] = {}
        self._catalog = self._announceable(list(catalog))
        self._gate.loop.set_permanent(self._own_names())

    # ---------------------------------------------------------------- public API

    def start(self) -> None:
        if self._thread is not None:
            return
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="cjb-discovery", daemon=True)
        self._thread.start()
        try:
            self._call(self._start())
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        if self._loop is None:
            return
        try:
            self._call(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._loop.close()
            self._loop = None
            self._thread = None

    def tunnel_up(self) -> None:
        self._call(self._set_up(True))

    def tunnel_down(self) -> None:
        self._call(self._set_up(False))

    def update_catalog(self, catalog: list[CatalogService]) -> None:
        self._call(self._update(list(catalog)))

    def refresh_ports(self) -> None:
        """Reopen the gate's sockets: call after the tunnel port (or a LAN port) was
        re-created. AF_PACKET sockets are bound to an ifindex, which a new link does not keep."""
        self._call(self._refresh_ports())

    def status(self) -> dict[str, Any]:
        return {
            "tunnel_up": self._up,
            "announced": sorted(self._registered),
            "ssdp_devices": len(
                devices_for(self.config.tenant, self.config.service_ipv4, self._catalog)
            ),
            "gate": dict(sorted(self._gate.counters.items())),
        }

    # ---------------------------------------------------------------- loop side

    def _call(self, coro: Coroutine[Any, Any, None], timeout: float = 30) -> None:
        assert self._loop is not None, "call start() first"
        fut: concurrent.futures.Future[None] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        fut.result(timeout)

    async def _start(self) -> None:
        cfg = self.config
        try:
            self._zc = AsyncZeroconf(interfaces=[str(cfg.lan_address)], ip_version=IPVersion.V4Only)
        except OSError as exc:
            raise RelayError(
                f"mDNS on {cfg.lan_ifname} ({cfg.lan_address}): {exc.strerror}; the appliance "
                "needs its own IPv4 address on the LAN bridge"
            ) from exc
        if cfg.ssdp:
            self._ssdp_sock = _ssdp_socket(cfg.lan_address)
            asyncio.get_running_loop().add_reader(self._ssdp_sock.fileno(), self._on_ssdp)
        if cfg.tunnel_ifname is not None:
            if cfg.apply_nft:
                _nft(nft_rules.discovery_table(cfg.tunnel_ifname))
            self._open_gate()

    async def _stop(self) -> None:
        await self._set_up(False)
        loop = asyncio.get_running_loop()
        if self._ssdp_timer is not None:
            self._ssdp_timer.cancel()
        if self._ssdp_sock is not None:
            loop.remove_reader(self._ssdp_sock.fileno())
            self._ssdp_sock.close()
            self._ssdp_sock = None
        self._close_gate()
        if self.config.tunnel_ifname is not None and self.config.apply_nft:
            with contextlib.suppress(RelayError):
                _nft(f"delete table bridge {nft_rules.TABLE}\n")
        if self._zc is not None:
            await self._zc.async_close()
            self._zc = None

    async def _refresh_ports(self) -> None:
        self._close_gate()
        if self.config.tunnel_ifname is not None:
            self._open_gate()

    async def _set_up(self, up: bool) -> None:
        self._up = up
        now = self._clock()
        if up:
            await self._announce(self._catalog)
            self._send_ssdp(self._ssdp.set_devices(self._devices(), now))
            self._send_ssdp(self._ssdp.activate(now))
            self._arm_ssdp_timer()
        else:
            await self._withdraw(list(self._registered))
            self._send_ssdp(self._ssdp.deactivate(now))

    async def _update(self, catalog: list[CatalogService]) -> None:
        catalog = self._announceable(catalog)
        self._catalog = catalog
        self._gate.loop.set_permanent(self._own_names())
        wanted = {_key(s): s for s in catalog}
        gone = [name for name in self._registered if name not in wanted]
        changed = [
            name
            for name, svc in wanted.items()
            if name in self._registered and self._registered[name][1] != svc
        ]
        await self._withdraw(gone + changed)
        if self._up:
            await self._announce(catalog)
        self._send_ssdp(self._ssdp.set_devices(self._devices(), self._clock()))

    async def _announce(self, services: list[CatalogService]) -> None:
        assert self._zc is not None
        pending = []
        for svc in services:
            key = _key(svc)
            if key in self._registered:
                continue
            info = self._info(svc)
            # allow_name_change: a LAN device already using the name keeps it (RFC 6762
            # §9 conflict resolution); ours becomes "name (2)". Keyed by the catalog name.
            task = await self._zc.async_register_service(info, allow_name_change=True)
            pending.append((key, info, svc, task))
        # Probing takes ~1.75 s per name (RFC 6762 §8.1); all names probe at once.
        results = await asyncio.gather(*(p[3] for p in pending), return_exceptions=True)
        for (key, info, svc, _), result in zip(pending, results, strict=True):
            if isinstance(result, BaseException):
                self._gate.counters["announce-failed"] += 1
                log.error("could not announce %s: %s", key, result)
                continue
            self._registered[key] = (info, svc)
            log.info("announced %s at %s:%d", info.name, self.config.service_ipv4, svc.port)

    async def _withdraw(self, names: list[str]) -> None:
        assert self._zc is not None
        for name in names:
            entry = self._registered.pop(name, None)
            if entry is not None:
                await (await self._zc.async_unregister_service(entry[0]))  # goodbye, TTL 0
                log.info("withdrew %s", name)

    def _announceable(self, catalog: list[CatalogService]) -> list[CatalogService]:
        """The gateway refuses control characters in catalog strings; an entry that carries
        one anyway never reaches an mDNS record or an SSDP header (counted, logged)."""
        clean = []
        for svc in catalog:
            bad = svc.control_char_field()
            if bad is None:
                clean.append(svc)
                continue
            self._gate.counters["catalog-control-chars"] += 1
            log.error(
                "catalog entry %r not announced: %s holds a control character", _key(svc), bad
            )
        return clean

    def _info(self, svc: CatalogService) -> ServiceInfo:
        cfg = self.config
        type_ = f"{svc.service_type}.local."
        return ServiceInfo(
            type_,
            f"{svc.instance}.{type_}",
            port=svc.port,
            properties=dict(svc.txt),
            server=f"{cfg.host_label}.local.",
            addresses=[cfg.service_ipv4.packed],
        )

    def _own_names(self) -> list[str]:
        names = [f"{self.config.host_label}.local"]
        names += [f"{s.instance}.{s.service_type}.local" for s in self._catalog]
        names += [d.uuid for d in self._devices()]
        return names

    def _devices(self) -> list[Any]:
        return devices_for(self.config.tenant, self.config.service_ipv4, self._catalog)

    # ---------------------------------------------------------------- SSDP IO

    def _on_ssdp(self) -> None:
        assert self._ssdp_sock is not None
        for _ in range(BATCH):
            try:
                data, addr = self._ssdp_sock.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self._send_ssdp(self._ssdp.on_search(data, addr, self._clock()))

    def _send_ssdp(self, outgoing: list[Outgoing]) -> None:
        if self._ssdp_sock is None or self._loop is None:
            return
        now = self._clock()
        for out in outgoing:
            delay = max(0.0, out.send_at - now)
            if delay:
                self._loop.call_later(delay, self._sendto, out.payload, out.addr)
            else:
                self._sendto(out.payload, out.addr)

    def _sendto(self, payload: bytes, addr: tuple[str, int]) -> None:
        if self._ssdp_sock is None:
            return
        try:
            self._ssdp_sock.sendto(payload, addr)
        except OSError as exc:
            self._gate.counters[f"ssdp-send-error-{exc.errno}"] += 1

    def _arm_ssdp_timer(self) -> None:
        if self._loop is None:
            return
        if self._ssdp_timer is not None:
            self._ssdp_timer.cancel()
        deadline = self._ssdp.next_deadline()
        if deadline is None:
            return
        delay = max(1.0, deadline - self._clock())
        self._ssdp_timer = self._loop.call_later(delay, self._ssdp_tick)

    def _ssdp_tick(self) -> None:
        self._send_ssdp(self._ssdp.on_timer(self._clock()))
        self._arm_ssdp_timer()

    # ---------------------------------------------------------------- gate IO

    def _open_gate(self) -> None:
        cfg = self.config
        assert cfg.tunnel_ifname is not None and self._loop is not None
        for name in (*cfg.lan_ports, cfg.tunnel_ifname):
            program = _compile_filter(name)
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            if program is not None:
                sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, program)
            else:
                self._gate.counters[f"no-capture-filter-{name}"] += 1
            sock.bind((name, ETH_P_ALL))
            sock.setblocking(False)
            self._gate_socks[name] = sock
            self._loop.add_reader(sock.fileno(), self._drain, name, sock)

    def _close_gate(self) -> None:
        assert self._loop is not None
        for sock in self._gate_socks.values():
            self._loop.remove_reader(sock.fileno())
            sock.close()
        self._gate_socks.clear()

    def _drain(self, name: str, sock: socket.socket) -> None:
        tunnel = self.config.tunnel_ifname
        for _ in range(BATCH):
            try:
                frame, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._gate.counters[f"rx-error-{name}"] += 1
                return
            if addr[2] == PACKET_OUTGOING:
                continue
            now = self._clock()
            if name == tunnel:
                verdict = self._gate.from_wan(frame, now)
                targets = [s for n, s in self._gate_socks.items() if n != tunnel]
            else:
                verdict = self._gate.from_lan(frame, now)
                targets = [self._gate_socks[tunnel]] if tunnel in self._gate_socks else []
            for out in verdict.frames:
                for target in targets:
                    try:
                        target.send(out)
                    except OSError as exc:
                        self._gate.counters[f"tx-error-{exc.errno}"] += 1


def _key(svc: CatalogService) -> str:
    return f"{svc.instance}.{svc.service_type}.local."


def _ssdp_socket(lan_address: IPv4Address) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("0.0.0.0", 1900))  # noqa: S104 - multicast group traffic arrives on the any address
    group = socket.inet_aton("239.255.255.250") + lan_address.packed
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, lan_address.packed)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)  # §1.1.2: default TTL 2
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    sock.setblocking(False)
    return sock


def _compile_filter(ifname: str) -> bytes | None:
    """A classic BPF program keeping only discovery UDP (so a busy LAN costs the gate no
    Python work per data frame), compiled by tcpdump; None without tcpdump (the gate then
    sees everything and drops non-discovery frames itself)."""
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        return None
    out = subprocess.run(
        # -i: compiled for that link's type (Ethernet), not for the default device's.
        [tcpdump, "-i", ifname, "-ddd", CAPTURE_FILTER],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        return None
    numbers = [list(map(int, line.split())) for line in out.stdout.strip().splitlines()]
    insns = numbers[1:]
    blob = b"".join(struct.pack("HBBI", *ins) for ins in insns)
    buf = _keep_alive(blob)
    return struct.pack("HL", len(insns), buf)


_FILTER_BUFFERS: list[Any] = []


def _keep_alive(blob: bytes) -> int:
    buf = ctypes.create_string_buffer(blob)
    _FILTER_BUFFERS.append(buf)  # the kernel copies it at setsockopt; keep it until then
    return ctypes.addressof(buf)


def _nft(script: str) -> None:
    out = subprocess.run(
        ["nft", "-f", "-"], input=script, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RelayError(f"nft rejected the discovery rules: {out.stderr.strip()}")
