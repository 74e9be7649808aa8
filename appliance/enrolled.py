"""The enrolled-mode agent: the IO adapter that owns the loop around `Lifecycle`.

One loop: wait until the machine's next deadline or the next repair tick, run what is due,
execute the commands (HTTP calls through `ControlClient` on one worker thread, kernel
changes through common/netlink and the `TunnelBuilder` on the loop's thread), feed results
back, write status.json. A tick first takes a cheap fingerprint of the namespace (links and
the nftables ruleset generation: common/netlink/drift.py); only when it moved, when the last
repair left something wrong, or every FULL_RECONCILE_EVERY seconds does it re-apply the
bridge, the tunnel port, the WAN filter and input policy idempotently. So a removed or
detached port, or a flushed table, comes back within `check_interval` at a fraction of the
CPU of re-applying everything every second.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cjb.appliance.arp_probe import Prober
from cjb.appliance.backoff import Backoff
from cjb.appliance.config import ApplianceModel
from cjb.appliance.control_client import ControlClient, DeviceCredentials
from cjb.appliance.discovery_link import DiscoveryLink
from cjb.appliance.keys import DeviceKeys, FactoryIdentity
from cjb.appliance.lan import LanError, LanView, find_service_address, read_lan
from cjb.appliance.lifecycle import (
    Activate,
    ActivateSource,
    Command,
    ConfigOk,
    Enroll,
    EnrollOk,
    Failed,
    Failure,
    FailureKind,
    FetchConfig,
    Forget,
    HeartbeatOk,
    Lifecycle,
    NonceOk,
    Reconnect,
    RequestNonce,
    Restored,
    Result,
    SendHeartbeat,
)
from cjb.appliance.store import Store
from cjb.appliance.tunnel import TunnelBuilder, TunnelError, TunnelRequest, TunnelStatus
from cjb.appliance.wan_filter import TABLE_FAMILY, TABLE_NAME, FilterSpec, filter_table
from cjb.appliance.wan_input import InputSpec, WanInput
from cjb.common.control.protocol import (
    COUNTER_NAME,
    MAX_HEARTBEAT_COUNTERS,
    MAX_WIRE_INT,
    DeviceConfig,
    EnrollRequest,
    EnrollResponse,
    Heartbeat,
    LanFacts,
)
from cjb.common.netlink import Bridge, Existing, Kernel, Link, Namespace, NetworkSpec, apply, nft
from cjb.common.netlink.kernel import NetlinkError
from cjb.common.private_file import atomic_write

log = logging.getLogger("cjb.appliance")
OWNER = "appliance"
NO_IPV6 = (("ipv6.disable_ipv6", "1"),)
STATUS_FILE = "status.json"
POLL_INFLIGHT = 0.05  # seconds between looks at an HTTP call in flight
# A full re-apply also repairs what the fingerprint cannot see (tc filters, addresses) and
# refreshes the WireGuard counters in status.json; between them an idle tick costs one
# link dump and one nftables generation read.
FULL_RECONCILE_EVERY = 60.0
# Between full re-applies the counters in status.json and heartbeats (the WAN filter's, the
# tunnel's) are refreshed this often: an operator or a test sees drops within seconds.
COUNTERS_EVERY = 5.0
# Every tick a full re-apply (the old behaviour): for benchmarks that measure the saving.
FULL_TICK_ENV = "CJB_APPLIANCE_FULL_TICK"


class AgentKernel(Kernel, LanView, Protocol):
    """What the agent needs from the kernel adapter (RealKernel has both halves)."""


def base_spec(cfg: ApplianceModel, adopt_bridge: bool = False) -> NetworkSpec:
    """The LAN bridge and its LAN ports; the tunnel port is the builder's.

    `adopt_bridge`: the bridge exists and is someone else's (systemd-networkd on the image,
    running DHCP on it): use it as it is, never touch its addresses.
    """
    bridge = (
        Link(cfg.bridge, Existing())
        if adopt_bridge
        else Link(cfg.bridge, Bridge(), sysctls=() if cfg.bridge_ipv6 else NO_IPV6)
    )
    links = [bridge]
    links += [
        Link(port, Existing(), master=cfg.bridge, offloads_off=True) for port in cfg.lan_ports
    ]
    return NetworkSpec(OWNER, (Namespace(None, tuple(links)),))


@dataclass
class EnrolledAgent:
    cfg: ApplianceModel
    kernel: AgentKernel
    builder: TunnelBuilder
    client: ControlClient
    identity: FactoryIdentity
    keys: DeviceKeys
    store: Store
    probe: Callable[[list[ipaddress.IPv4Address]], Prober]
    rng: Callable[[], float]
    clock: Callable[[], float] = time.monotonic
    enrollment: EnrollResponse | None = None
    machine: Lifecycle = field(init=False)
    discovery: DiscoveryLink = field(init=False)
    lan: LanFacts | None = None
    _pending: EnrollResponse | DeviceConfig | None = None
    _filter_spec: FilterSpec | None = None
    _filter_counters: dict[str, tuple[int, int]] = field(default_factory=dict)
    _tunnel: TunnelStatus | None = None
    _errors: list[str] = field(default_factory=list)
    _started: float = 0.0
    _http: ThreadPoolExecutor | None = None
    _inflight: Future[Result] | None = None
    wan_input: WanInput | None = None
    # The namespace's fingerprint (DriftProbe.fingerprint); None: a full re-apply every tick.
    drift: Callable[[], object] | None = None
    _settled: object = None  # the fingerprint after the last clean full re-apply
    _last_full: float = float("-inf")
    _last_counters: float = float("-inf")
    # What the last full tick told discovery.sync (config, LAN address, tunnel usable).
    _discovery_args: tuple[DeviceConfig, ipaddress.IPv4Address | None, bool] | None = None

    def __post_init__(self) -> None:
        if self.wan_input is None and self.cfg.wan_input:
            self.wan_input = WanInput(self.kernel)
        self.enrollment = self.store.load()
        restored = None
        if self.enrollment is not None:
            config = self.enrollment.config
            restored = Restored(config.config_version, config.heartbeat_seconds)
        self.machine = Lifecycle(
            rng=self.rng,
            backoff=Backoff(self.cfg.backoff_base, self.cfg.backoff_cap),
            restored=restored,
        )
        self.discovery = DiscoveryLink(
            self.cfg.bridge, self.cfg.lan_ports, self.cfg.tunnel_port, self.cfg.discovery
        )

    # -- the loop -----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        # HTTP calls run on one worker thread, so a gateway that times out never delays the
        # repair tick; everything else (the machine, the kernel) stays on this thread.
        self._http = ThreadPoolExecutor(1, thread_name_prefix="cjb-http")
        try:
            self._started = now = self.clock()
            self._execute(self.machine.start(now))
            next_tick = now
            while not stop.is_set():
                now = self.clock()
                if now >= next_tick:
                    self.tick()
                    next_tick = now + self.cfg.check_interval
                self._collect()
                self._execute(self.machine.on_timer(self.clock()))
                self.write_status()
                deadline = self.machine.next_deadline()
                wake = next_tick if deadline is None else min(next_tick, deadline)
                if self._inflight is not None:
                    wake = min(wake, self.clock() + POLL_INFLIGHT)
                stop.wait(max(0.0, wake - self.clock()))
        finally:
            self._http.shutdown(wait=False, cancel_futures=True)
            self.discovery.stop()

    def tick(self) -> None:
        """A full repair when something moved (or is due), else only the cheap check."""
        now = self.clock()
        if self._unchanged(now):
            if now - self._last_counters >= COUNTERS_EVERY:
                self._refresh_counters()
                self._last_counters = now
            if self._discovery_args is not None:
                self.discovery.sync(now, *self._discovery_args, False)
            return
        self._full_tick()
        self._last_full = self._last_counters = now
        self._settled = self._fingerprint() if self._healthy() else None

    def _refresh_counters(self) -> None:
        """The tunnel's status and the WAN filter's counters, without re-applying; anything
        wrong makes the next tick a full repair."""
        request = self.tunnel_request()
        try:
            if request is not None:
                self._tunnel = self.builder.status(request)
            if self._filter_spec is not None:
                self._filter_counters = nft.counters(None, TABLE_FAMILY, TABLE_NAME)
        except (TunnelError, NetlinkError, OSError) as exc:
            log.info("counter refresh failed, repairing in full next tick: %s", exc)
            self._settled = None
            return
        if not self._healthy():
            self._settled = None

    def _fingerprint(self) -> object:
        """The kernel's fingerprint and what the agent wants of it (enrolling, a new config
        or a forgotten one change the latter without touching the kernel)."""
        if self.drift is None:
            return None
        try:
            return self.drift(), self.enrollment
        except OSError as exc:
            log.warning("drift check failed, repairing in full: %s", exc)
            return None

    def _unchanged(self, now: float) -> bool:
        if self._settled is None or now - self._last_full >= FULL_RECONCILE_EVERY:
            return False
        return self._fingerprint() == self._settled

    def _healthy(self) -> bool:
        """Nothing left to wait for: no errors, and (enrolled) the tunnel up on the bridge
        (until then the handshake and the status need a full look every tick)."""
        if self._errors:
            return False
        if self.enrollment is None:
            return True
        t = self._tunnel
        return t is not None and t.up and t.on_bridge

    def _full_tick(self) -> None:
        """Re-apply everything the kernel should have (idempotent), read the counters."""
        self._errors = []
        self._discovery_args = None
        try:
            bridge = self.kernel.links(None).get(self.cfg.bridge)
            adopt = bridge is not None and bridge.alias != f"cjb:{OWNER}"
            for change in apply(self.kernel, base_spec(self.cfg, adopt)):
                log.info("apply: %s", change)
        except NetlinkError as exc:
            self._errors.append(f"bridge: {exc}")
        request = self.tunnel_request()
        if request is None or self.enrollment is None:
            self._tunnel = None
            self.discovery.sync(self.clock(), None, None, False, False)
            return
        recreated = False
        try:
            for change in self.builder.ensure(request):
                log.info("tunnel: %s", change)
                recreated = recreated or f"add link {request.port_name}" in change
            self._tunnel = self.builder.status(request)
        except (TunnelError, NetlinkError, OSError) as exc:
            self._errors.append(f"tunnel: {exc}")
            self._tunnel = TunnelStatus(False, False, request.port_name, detail=str(exc))
        self._ensure_filter()
        self._ensure_input(request)
        tunnel = self._tunnel
        args = (self.enrollment.config, self._own_lan_address(), tunnel.up and tunnel.on_bridge)
        self.discovery.sync(self.clock(), *args, recreated)
        self._discovery_args = args

    def _own_lan_address(self) -> ipaddress.IPv4Address | None:
        try:
            own = sorted(a for a in self.kernel.addresses(None, self.cfg.bridge) if a.version == 4)
        except NetlinkError:
            return None
        return ipaddress.IPv4Address(own[0].ip) if own else None

    # -- commands -----------------------------------------------------------------------

    def _execute(self, commands: list[Command]) -> None:
        for command in commands:
            result = self._perform(command)
            if result is not None:
                self._answer(result)

    def _answer(self, result: Result) -> None:
        self._execute(self.machine.on_response(self.clock(), result))
        log.info("%s", self.machine.status_line(self.clock()))

    def _collect(self) -> None:
        """Feed the machine the outcome of the HTTP call in flight, once it is done."""
        future = self._inflight
        if future is None or not future.done():
            return
        self._inflight = None
        self._answer(future.result())

    def _submit(self, call: Callable[[], Result]) -> None:
        def guarded() -> Result:
            try:
                return call()
            except Exception as exc:  # a bug in an adapter must not stop the agent
                log.exception("control call failed")
                return Failed(Failure(FailureKind.BAD_RESPONSE, f"{type(exc).__name__}: {exc}"))

        if self._http is None:  # not running the loop (tests drive steps by hand)
            self._answer(guarded())
            return
        self._inflight = self._http.submit(guarded)

    def _perform(self, command: Command) -> Result | None:
        client = self.client
        if isinstance(command, RequestNonce):
            failure = self._learn_lan()  # probing stays here: it needs the kernel adapter
            if failure is not None:
                return Failed(failure)

            def nonce() -> Result:
                got = client.nonce()
                return Failed(got) if isinstance(got, Failure) else NonceOk(got.nonce)

            self._submit(nonce)
        elif isinstance(command, Enroll):
            self._submit(self._enroll_call(command.nonce))
        elif isinstance(command, SendHeartbeat):
            beat = self.heartbeat()

            def heartbeat() -> Result:
                got = client.heartbeat(beat)
                return Failed(got) if isinstance(got, Failure) else HeartbeatOk(got.config_version)

            self._submit(heartbeat)
        elif isinstance(command, FetchConfig):

            def fetch() -> Result:
                config = client.config()
                if isinstance(config, Failure):
                    return Failed(config)
                self._pending = config
                return ConfigOk(config.config_version, config.heartbeat_seconds)

            self._submit(fetch)
        elif isinstance(command, Activate):
            self._activate(command.source)
        elif isinstance(command, Forget):
            self._forget(command.reason)
        elif isinstance(command, Reconnect):
            log.warning("reconnecting the tunnel: %s", command.reason)
            request = self.tunnel_request()
            if request is not None:
                with contextlib.suppress(TunnelError, NetlinkError, OSError):
                    self.builder.reconnect(request)
        return None

    def _learn_lan(self) -> Failure | None:
        if self.lan is not None:
            return None
        cfg = self.cfg
        try:
            plan = read_lan(self.kernel, cfg.bridge, cfg.lan_prefix, cfg.lan_router)
            log.info("probing for a free service address in %s (RFC 5227)", plan.prefix)
            address = find_service_address(plan, cfg.preferred_service_host, self.probe)
        except (LanError, NetlinkError, OSError) as exc:
            return Failure(FailureKind.LAN, str(exc))
        self.lan = LanFacts(
            prefix=plan.prefix, router=plan.router, service_address=address, lan_mtu=cfg.lan_mtu
        )
        log.info("LAN %s router %s, service address %s", plan.prefix, plan.router, address)
        return None

    def _enroll_call(self, nonce: str) -> Callable[[], Result]:
        assert self.lan is not None  # RequestNonce learned it
        request = EnrollRequest(
            serial=self.identity.serial,
            factory_public_key=self.identity.public_b64,
            nonce=nonce,
            wireguard_public_key=self.keys.wireguard_public_b64,
            csr_pem=self.keys.csr_pem(self.identity.serial),
            lan=self.lan,
        )
        client, identity = self.client, self.identity

        def enroll() -> Result:
            got = client.enroll(request, identity)
            if isinstance(got, Failure):
                return Failed(got)
            self._pending = got
            return EnrollOk(got.config.config_version, got.config.heartbeat_seconds)

        return enroll

    def _activate(self, source: ActivateSource) -> None:
        pending, self._pending = self._pending, None
        if source is ActivateSource.ENROLL and isinstance(pending, EnrollResponse):
            self.store.save(pending)
            self.enrollment = pending
            log.info("enrolled: tenant %s", pending.config.tenant)
        elif source is ActivateSource.CONFIG and isinstance(pending, DeviceConfig):
            assert self.enrollment is not None
            self.enrollment = self.store.save_config(self.enrollment, pending)
            log.info("configuration version %s applied", pending.config_version)
        self.client.credentials = DeviceCredentials(
            self.store.ca_file, self.store.cert_file, self.keys.device_key_file
        )
        if self.lan is None and self.enrollment is not None:
            self.lan = self._lan_without_probing(self.enrollment.config)
        self.tick()

    def _lan_without_probing(self, config: DeviceConfig) -> LanFacts | None:
        """After a restart: the LAN facts for heartbeats, with the service address the
        gateway confirmed (probing again would find our own cloud answering for it)."""
        cfg = self.cfg
        try:
            plan = read_lan(self.kernel, cfg.bridge, cfg.lan_prefix, cfg.lan_router)
        except (LanError, NetlinkError, OSError):
            return None
        return LanFacts(
            prefix=plan.prefix,
            router=plan.router,
            service_address=config.service_ipv4,
            lan_mtu=cfg.lan_mtu,
        )

    def _forget(self, reason: str) -> None:
        log.warning("forgetting the enrollment: %s", reason)
        self.store.forget()
        self.enrollment = None
        self.client.credentials = None
        self.lan = None  # the LAN may have changed while we were away: probe again
        self._filter_spec = None
        self.discovery.stop("off: not enrolled")
        with contextlib.suppress(TunnelError, NetlinkError, OSError):
            self.builder.remove()
        with contextlib.suppress(NetlinkError):
            nft.delete_table(None, TABLE_FAMILY, TABLE_NAME)
        self._tunnel = None

    # -- tunnel and filter --------------------------------------------------------------

    def tunnel_request(self) -> TunnelRequest | None:
        if self.enrollment is None:
            return None
        return TunnelRequest(
            config=self.enrollment.config.tunnel,
            wireguard_private_key_file=self.keys.wireguard_private_file,
            bridge=self.cfg.bridge,
            port_name=self.cfg.tunnel_port,
            mtu=self.cfg.lan_mtu,
            underlay=self.cfg.wan,
        )

    def _ensure_input(self, request: TunnelRequest) -> None:
        """The WAN input policy and the VXLAN guard (wan_input.py), every tick: a flushed
        ruleset comes back within one tick, and the guard never left."""
        if self.wan_input is None:
            return
        try:
            ifname, gateway = self.builder.vxlan_source(request)
        except (TunnelError, OSError) as exc:
            self._errors.append(f"wan input: {exc}")
            return
        spec = InputSpec(
            vni=request.config.vni,
            vxlan_port=request.config.vxlan_port,
            gateway=gateway,
            tunnel_ifname=ifname,
            lan_ifnames=(self.cfg.bridge,),
        )
        exclude = (self.cfg.bridge, self.cfg.tunnel_port, *self.cfg.lan_ports)
        self._errors += self.wan_input.ensure(spec, exclude)

    def _ensure_filter(self) -> None:
        if self.enrollment is None or not self.cfg.filter.enabled:
            return
        config, f = self.enrollment.config, self.cfg.filter
        spec = FilterSpec(
            tunnel_port=self.cfg.tunnel_port,
            service_ipv4=config.service_ipv4,
            cloud_macs=tuple(config.cloud_macs),
            group_pps=f.group_pps,
            group_burst=f.group_burst,
            ndp=f.ndp,
        )
        try:
            if spec == self._filter_spec:
                self._filter_counters = nft.counters(None, TABLE_FAMILY, TABLE_NAME)
                return
        except NetlinkError:
            pass  # the table is gone: apply it again below
        try:
            nft.apply_table(None, filter_table(spec, self._filter_counters))
            self._filter_spec = spec
            self._filter_counters = nft.counters(None, TABLE_FAMILY, TABLE_NAME)
            log.info("WAN filter applied for %s", config.service_ipv4)
            if not spec.cloud_macs:
                log.warning(
                    "the gateway named no cloud MACs: all unicast the bridge forwards to the "
                    "tunnel may cross (broadcast/multicast are still filtered)"
                )
        except NetlinkError as exc:
            self._errors.append(f"filter: {exc}")

    # -- reports ------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        out = {f"filter_{name}": packets for name, (packets, _) in self._filter_counters.items()}
        if self._tunnel is not None:
            out.update(self._tunnel.counters)
        if self.wan_input is not None:
            out.update(self.wan_input.counters())
        out.update(self.discovery.counters())
        out.update(self.machine.counters.as_dict())
        # The gateway refuses a heartbeat outside the wire bounds: send what fits.
        fits = sorted(k for k in out if COUNTER_NAME.match(k))[:MAX_HEARTBEAT_COUNTERS]
        return {k: min(max(0, int(out[k])), MAX_WIRE_INT) for k in fits}

    def heartbeat(self) -> Heartbeat:
        config_version = self.enrollment.config.config_version if self.enrollment else 0
        tunnel = self._tunnel
        age = tunnel.last_handshake_age if tunnel is not None else None
        return Heartbeat(
            serial=self.identity.serial,
            config_version=config_version,
            uptime_seconds=min(max(0, int(self.clock() - self._started)), MAX_WIRE_INT),
            tunnel_up=bool(tunnel and tunnel.up and tunnel.on_bridge),
            last_handshake_age_seconds=None if age is None else min(max(0, int(age)), MAX_WIRE_INT),
            counters=self.counters(),
            lan=self.lan,
        )

    def status(self) -> dict[str, Any]:
        now = self.clock()
        tunnel = self._tunnel
        config = self.enrollment.config if self.enrollment is not None else None
        return {
            "mode": "enrolled",
            "pid": os.getpid(),
            "updated": time.time(),
            "serial": self.identity.serial,
            "factory_key_fingerprint": self.identity.fingerprint,
            "wireguard_public_key": self.keys.wireguard_public_b64,
            "phase": self.machine.phase.value,
            "status_line": self.machine.status_line(now),
            "tenant": config.tenant if config else None,
            "config_version": config.config_version if config else None,
            "service_ipv4": str(config.service_ipv4) if config else None,
            "vni": config.tunnel.vni if config else None,
            "bridge": self.cfg.bridge,
            "tunnel": self.cfg.tunnel_port,
            "tunnel_up": bool(tunnel and tunnel.up),
            "tunnel_on_bridge": bool(tunnel and tunnel.on_bridge),
            "tunnel_detail": tunnel.detail if tunnel else "no tunnel (not enrolled)",
            "last_handshake_age": tunnel.last_handshake_age if tunnel else None,
            "lan": self.lan.model_dump(mode="json") if self.lan else None,
            "counters": self.counters(),
            "discovery": self.discovery.note,
            "vxlan_guard": self._guard_note(),
            "errors": self._errors,
        }

    def _guard_note(self) -> str:
        if self.wan_input is None:
            return "off (wan_input: false)"
        if self.wan_input.guard_error is not None:
            return f"INACTIVE: {self.wan_input.guard_error}"
        return "active"

    def write_status(self) -> None:
        path = Path(self.cfg.state_dir) / STATUS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.status(), indent=2, sort_keys=True) + "\n"
        atomic_write(path, text, 0o644, durable=False)
