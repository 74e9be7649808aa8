"""The minimal appliance agent: LAN bridge + VXLAN tunnel port, kept in place.

Every `check_interval` the desired state is applied again; apply is idempotent, so this
only acts when something drifted (the tunnel port was removed or detached from the bridge).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

from cjb.appliance.config import ApplianceModel
from cjb.common.netlink import Bridge, Existing, Link, Namespace, NetworkSpec, Vxlan, apply
from cjb.common.netlink.real import RealKernel

log = logging.getLogger("cjb.appliance")
OWNER = "appliance"
NO_IPV6 = (("ipv6.disable_ipv6", "1"),)


def appliance_spec(cfg: ApplianceModel) -> NetworkSpec:
    t = cfg.tunnel
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
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def run(cfg: ApplianceModel) -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    spec = appliance_spec(cfg)
    repairs = 0  # applies that changed something after the first successful one
    first = True
    with RealKernel() as kernel:
        while not stop.is_set():
            error = None
            try:
                changes = apply(kernel, spec)
            except Exception as exc:  # keep trying: the underlay may come later
                changes, error = [], str(exc)
                log.error("apply failed: %s", exc)
            if changes and not first:
                repairs += 1
            if error is None:
                first = False
            if changes:
                for change in changes:
                    log.info("apply: %s", change)
            links = kernel.links(None)
            tunnel = links.get(cfg.tunnel.name)
            _write_status(
                cfg,
                {
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
                    "last_changes": changes,
                    "error": error,
                },
            )
            stop.wait(cfg.check_interval)
