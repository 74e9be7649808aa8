"""The enrolled-mode agent: the loop around `Lifecycle`, and the dispatch of its commands.

One loop: wait until the machine's next deadline or the next repair tick, run what is due,
execute the commands, feed results back, write status.json. The work is in parts with one
job each:

    control_exchange.py  the HTTP exchange (one worker thread), requests -> `Result`s
    lan_facts.py         the LAN facts: probing for the service address, or read back
    reconcile.py         the kernel's desired state, re-applied every tick (bridge,
                         tunnel, WAN filter, WAN input and VXLAN guard, discovery link)
    enrolled_status.py   the heartbeat and status.json

The replies (EnrollResponse, DeviceConfig) travel through the machine: `EnrollOk` and
`ConfigOk` carry them, and `Activate` hands back exactly what the machine accepted.

A tick first takes a cheap fingerprint of the namespace (links and the nftables ruleset
generation: common/netlink/drift.py); only when it moved, when the last repair left something
wrong, or every FULL_RECONCILE_EVERY seconds does it re-apply everything. So a removed or
detached port, or a flushed table, comes back within `check_interval` at a fraction of the
CPU of re-applying everything every second.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cjb.appliance.arp_probe import Prober
from cjb.appliance.backoff import Backoff
from cjb.appliance.config import ApplianceModel
from cjb.appliance.control_client import ControlClient, DeviceCredentials
from cjb.appliance.control_exchange import ControlExchange
from cjb.appliance.discovery_link import DiscoveryLink
from cjb.appliance.enrolled_status import AgentView, write_status
from cjb.appliance.enrolled_status import counters as report_counters
from cjb.appliance.enrolled_status import heartbeat as report_heartbeat
from cjb.appliance.enrolled_status import status as report_status
from cjb.appliance.keys import DeviceKeys, FactoryIdentity
from cjb.appliance.lan_facts import lan_without_probing, learn_lan
from cjb.appliance.lifecycle import (
    Activate,
    ActivateSource,
    Command,
    Enroll,
    Failed,
    FetchConfig,
    Forget,
    Lifecycle,
    Reconnect,
    RequestNonce,
    Restored,
    Result,
    SendHeartbeat,
)
from cjb.appliance.reconcile import AgentKernel, Reconciler, base_spec
from cjb.appliance.sd_notify import Notifier
from cjb.appliance.store import Store
from cjb.appliance.tunnel import TunnelBuilder, TunnelRequest
from cjb.appliance.wan_input import WanInput
from cjb.common.control.protocol import (
    DeviceConfig,
    EnrollRequest,
    EnrollResponse,
    Heartbeat,
    LanFacts,
)

__all__ = ["AgentKernel", "EnrolledAgent", "base_spec"]

log = logging.getLogger("cjb.appliance")
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
    parts: Reconciler = field(init=False)
    exchange: ControlExchange = field(init=False)
    lan: LanFacts | None = None
    wan_input: WanInput | None = None
    _started: float = 0.0
    # The namespace's fingerprint (DriftProbe.fingerprint); None: a full re-apply every tick.
    drift: Callable[[], object] | None = None
    _settled: object = None  # the fingerprint after the last clean full re-apply
    _last_full: float = float("-inf")
    _last_counters: float = float("-inf")

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
        self.parts = Reconciler(
            self.cfg,
            self.kernel,
            self.builder,
            self.keys,
            self.discovery,
            self.wan_input,
            self.clock,
        )
        self.exchange = ControlExchange(self.client)

    # -- the loop -----------------------------------------------------------------------

    def run(self, stop: threading.Event, notify: Notifier | None = None) -> None:
        """The loop; `notify` gets READY=1 after the first tick and WATCHDOG=1 from every
        pass (appliance/sd_notify.py), so systemd restarts an agent that stops passing."""
        notify = notify or Notifier({})
        # HTTP calls run on one worker thread, so a gateway that times out never delays the
        # repair tick; everything else (the machine, the kernel) stays on this thread.
        self.exchange.start()
        try:
            self._started = now = self.clock()
            self._execute(self.machine.start(now))
            next_tick = now
            while not stop.is_set():
                now = self.clock()
                if now >= next_tick:
                    self.tick()
                    next_tick = now + self.cfg.check_interval
                    notify.ready()
                self._collect()
                self._execute(self.machine.on_timer(self.clock()))
                self.write_status()
                notify.alive()
                deadline = self.machine.next_deadline()
                wake = next_tick if deadline is None else min(next_tick, deadline)
                ping = notify.next_ping()
                if ping is not None:
                    wake = min(wake, ping)
                if self.exchange.busy:
                    wake = min(wake, self.clock() + POLL_INFLIGHT)
                stop.wait(max(0.0, wake - self.clock()))
        finally:
            self.exchange.stop()
            self.discovery.stop()

    def tick(self) -> None:
        """A full repair when something moved (or is due), else only the cheap check."""
        now = self.clock()
        if self._unchanged(now):
            if now - self._last_counters >= COUNTERS_EVERY:
                self._refresh_counters()
                self._last_counters = now
            self.parts.resync_discovery(now)
            return
        self._full_tick()
        self._last_full = self._last_counters = now
        self._settled = self._fingerprint() if self._healthy() else None

    def _refresh_counters(self) -> None:
        """The tunnel's status and the WAN filter's counters, without re-applying; anything
        wrong makes the next tick a full repair."""
        if not self.parts.refresh_counters(self.enrollment) or not self._healthy():
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
        return self.parts.healthy(self.enrollment)

    def _full_tick(self) -> None:
        """Re-apply everything the kernel should have (idempotent), read the counters."""
        self.parts.tick(self.enrollment)

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
        result = self.exchange.collect()
        if result is not None:
            self._answer(result)

    def _perform(self, command: Command) -> Result | None:
        exchange = self.exchange
        if isinstance(command, RequestNonce):
            if self.lan is None:  # probing stays on this thread: it needs the kernel adapter
                learned = learn_lan(self.cfg, self.kernel, self.probe)
                if not isinstance(learned, LanFacts):
                    return Failed(learned)
                self.lan = learned
            exchange.submit(exchange.nonce, self._answer)
        elif isinstance(command, Enroll):
            exchange.submit(
                exchange.enroll_call(self._enroll_request(command.nonce), self.identity),
                self._answer,
            )
        elif isinstance(command, SendHeartbeat):
            exchange.submit(exchange.heartbeat_call(self.heartbeat()), self._answer)
        elif isinstance(command, FetchConfig):
            exchange.submit(exchange.fetch_config, self._answer)
        elif isinstance(command, Activate):
            self._activate(command)
        elif isinstance(command, Forget):
            self._forget(command.reason)
        elif isinstance(command, Reconnect):
            self.parts.reconnect(self.enrollment, command.reason)
        return None

    def _enroll_request(self, nonce: str) -> EnrollRequest:
        assert self.lan is not None  # RequestNonce learned it
        return EnrollRequest(
            serial=self.identity.serial,
            factory_public_key=self.identity.public_b64,
            nonce=nonce,
            wireguard_public_key=self.keys.wireguard_public_b64,
            csr_pem=self.keys.csr_pem(self.identity.serial),
            lan=self.lan,
        )

    def _activate(self, command: Activate) -> None:
        received = command.received
        if command.source is ActivateSource.ENROLL and isinstance(received, EnrollResponse):
            self.store.save(received)
            self.enrollment = received
            log.info("enrolled: tenant %s", received.config.tenant)
        elif command.source is ActivateSource.CONFIG and isinstance(received, DeviceConfig):
            assert self.enrollment is not None
            self.enrollment = self.store.save_config(self.enrollment, received)
            log.info("configuration version %s applied", received.config_version)
        self.client.credentials = DeviceCredentials(
            self.store.ca_file, self.store.cert_file, self.keys.device_key_file
        )
        if self.lan is None and self.enrollment is not None:
            self.lan = lan_without_probing(self.cfg, self.kernel, self.enrollment.config)
        self.tick()

    def _forget(self, reason: str) -> None:
        log.warning("forgetting the enrollment: %s", reason)
        self.store.forget()
        self.enrollment = None
        self.client.credentials = None
        self.lan = None  # the LAN may have changed while we were away: probe again
        self.parts.teardown()

    # -- reports ------------------------------------------------------------------------

    def tunnel_request(self) -> TunnelRequest | None:
        return self.parts.tunnel_request(self.enrollment)

    def _view(self) -> AgentView:
        now = self.clock()
        return AgentView(
            self.identity,
            self.keys,
            self.machine,
            self.parts,
            self.enrollment,
            self.lan,
            now - self._started,
            now,
        )

    def counters(self) -> dict[str, int]:
        return report_counters(self._view())

    def heartbeat(self) -> Heartbeat:
        return report_heartbeat(self._view())

    def status(self) -> dict[str, Any]:
        return report_status(self._view())

    def write_status(self) -> None:
        write_status(Path(self.cfg.state_dir), self.status())
