"""The appliance agent: `run(cfg)` picks the mode (config.py) and owns the process.

Static mode: LAN bridge + a fixed VXLAN tunnel port, kept in place. Every
`check_interval` the desired state is applied again; apply is idempotent, so this only acts
when something drifted (the tunnel port was removed or detached from the bridge).
Enrolled mode: enrolled.py.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import random
import signal
import threading
import time
from pathlib import Path

from cjb.appliance.arp_probe import Prober, Timing
from cjb.appliance.arp_probe_io import probe_free_address
from cjb.appliance.config import ApplianceModel
from cjb.appliance.control_client import ControlClient
from cjb.appliance.enrolled import FULL_RECONCILE_EVERY, FULL_TICK_ENV, EnrolledAgent
from cjb.appliance.keys import IdentityError, device_keys, load_factory
from cjb.appliance.lan import scaled
from cjb.appliance.sd_notify import Notifier
from cjb.appliance.store import Store
from cjb.appliance.tunnel import PlainVxlanBuilder, TunnelBuilder
from cjb.appliance.wan_input import InputSpec, WanInput
from cjb.common.control.identity import ApplianceLayout
from cjb.common.netlink import Bridge, Existing, Link, Namespace, NetworkSpec, Vxlan, apply
from cjb.common.netlink.drift import DriftProbe
from cjb.common.netlink.real import RealKernel
from cjb.common.private_file import atomic_write

log = logging.getLogger("cjb.appliance")
OWNER = "appliance"
NO_IPV6 = (("ipv6.disable_ipv6", "1"),)


def appliance_spec(cfg: ApplianceModel) -> NetworkSpec:
    t = cfg.tunnel
    assert t is not None, "static mode needs `tunnel` in the config"
    links = [
        Link(cfg.bridge, Bridge(), sysctls=() if cfg.bridge_ipv6 else NO_IPV6),
        Link(
            t.name,
            Vxlan(vni=t.vni, local=t.local, remote=t.remote, port=t.port, underlay=t.underlay),
            mtu=t.mtu,
            master=cfg.bridge,
            sysctls=NO_IPV6,
            offloads_off=True,
        ),
    ]
    links += [
        Link(port, Existing(), master=cfg.bridge, offloads_off=True) for port in cfg.lan_ports
    ]
    return NetworkSpec(OWNER, (Namespace(None, tuple(links)),))


def status_path(cfg: ApplianceModel) -> Path:
    return Path(cfg.state_dir) / "status.json"


def _write_status(cfg: ApplianceModel, data: dict[str, object]) -> None:
    path = status_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n", 0o644, durable=False)


def run(cfg: ApplianceModel) -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if cfg.static:
        run_static(cfg, stop)
    else:
        run_enrolled(cfg, stop)


def build_enrolled(cfg: ApplianceModel, kernel: RealKernel) -> EnrolledAgent:
    """Wire the enrolled agent to the real world (identity on disk, HTTPS, AF_PACKET)."""
    layout = ApplianceLayout(Path(cfg.root))
    identity = load_factory(layout)
    try:
        url = layout.gateway_url.read_text().strip()
    except FileNotFoundError:
        raise IdentityError(
            f"{layout.gateway_url}: missing; the image must carry the gateway URL "
            "(https://HOST:PORT)"
        ) from None
    client = ControlClient(url, layout.operator_ca, timeout=cfg.http_timeout)
    rng = random.SystemRandom().random
    timing = scaled(Timing(), cfg.arp_probe_scale)

    def probe(order: list[ipaddress.IPv4Address]) -> Prober:
        return probe_free_address(cfg.bridge, order, timing=timing, rng=rng)

    return EnrolledAgent(
        cfg=cfg,
        kernel=kernel,
        builder=make_builder(cfg, kernel),
        client=client,
        identity=identity,
        keys=device_keys(layout.state_dir),
        store=Store(layout.state_dir),
        probe=probe,
        rng=rng,
        drift=None if os.environ.get(FULL_TICK_ENV) else DriftProbe().fingerprint,
    )


def make_builder(cfg: ApplianceModel, kernel: RealKernel) -> TunnelBuilder:
    if cfg.tunnel_builder == "wireguard":
        # Imported here: the plain path must not need the WireGuard tooling.
        from cjb.appliance.tunnel_wireguard import WireGuardTunnelBuilder

        return WireGuardTunnelBuilder(kernel, log_file=Path(cfg.state_dir) / "wireguard.log")
    return PlainVxlanBuilder(kernel)


def run_enrolled(cfg: ApplianceModel, stop: threading.Event) -> None:
    with RealKernel() as kernel:
        agent = build_enrolled(cfg, kernel)
        log.info(
            "appliance %s (factory key %s) starting",
            agent.identity.serial,
            agent.identity.fingerprint,
        )
        agent.run(stop, Notifier())


def run_static(cfg: ApplianceModel, stop: threading.Event) -> None:
    assert cfg.tunnel is not None
    spec = appliance_spec(cfg)
    repairs = 0  # applies that changed something after the first successful one
    first = True
    t = cfg.tunnel
    # Plain VXLAN is the trusted-link mode: VXLAN only from the configured gateway address.
    inputs = InputSpec(t.vni, t.port, t.remote, None, (cfg.bridge,))
    notify = Notifier()
    # As the enrolled agent: a full re-apply only when the cheap fingerprint moved, the
    # last one failed, or FULL_RECONCILE_EVERY passed (appliance/enrolled.py).
    probe = None if os.environ.get(FULL_TICK_ENV) else DriftProbe()
    settled: object = None
    last_full = float("-inf")
    status: dict[str, object] = {}
    with RealKernel() as kernel:
        wan_input = WanInput(kernel) if cfg.wan_input else None
        while not stop.is_set():
            if (
                probe is not None
                and settled is not None
                and time.monotonic() - last_full < FULL_RECONCILE_EVERY
                and _fingerprint(probe) == settled
            ):
                status["updated"] = time.time()
                _write_status(cfg, status)
                stop.wait(cfg.check_interval)
                continue
            last_full = time.monotonic()
            error = None
            try:
                changes = apply(kernel, spec)
            except Exception as exc:  # keep trying: the underlay may come later
                changes, error = [], str(exc)
                log.error("apply failed: %s", exc)
            wan_errors = (
                wan_input.ensure(inputs, (cfg.bridge, t.name, *cfg.lan_ports)) if wan_input else []
            )
            if changes and not first:
                repairs += 1
            if error is None:
                first = False
            if changes:
                for change in changes:
                    log.info("apply: %s", change)
            links = kernel.links(None)
            tunnel = links.get(cfg.tunnel.name)
            status = {
                "mode": "static",
                "pid": os.getpid(),
                "updated": time.time(),
                "bridge": cfg.bridge,
                "tunnel": cfg.tunnel.name,
                "vni": cfg.tunnel.vni,
                "local": str(cfg.tunnel.local),
                "remote": str(cfg.tunnel.remote),
                "tunnel_up": bool(tunnel and tunnel.up),
                "tunnel_on_bridge": bool(tunnel and tunnel.master == cfg.bridge),
                "repairs": repairs,
                "wan_input": wan_input.counters() if wan_input else None,
                "wan_input_errors": wan_errors,
                "last_changes": changes,
                "error": error,
            }
            _write_status(cfg, status)
            clean = error is None and not wan_errors and bool(tunnel and tunnel.up)
            settled = _fingerprint(probe) if probe is not None and clean else None
            notify.ready()
            notify.alive()
            ping = notify.next_ping()
            wait = (
                cfg.check_interval
                if ping is None
                else min(cfg.check_interval, ping - time.monotonic())
            )
            stop.wait(max(0.0, wait))
        if probe is not None:
            probe.close()


def _fingerprint(probe: DriftProbe) -> object:
    try:
        return probe.fingerprint()
    except OSError as exc:
        log.warning("drift check failed, repairing in full: %s", exc)
        return None
