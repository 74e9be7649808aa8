"""The gateway's WireGuard transport: one interface, one peer per appliance.

Each peer's allowed IPs are exactly its overlay /128. WireGuard's cryptokey routing drops
any packet from a peer whose inner source is not in its allowed IPs, so an appliance can
only ever speak from its own overlay address; the VNI binding then ties each VNI to that
address: in tc on this interface (cjb.common.vxlan_guard, which `nft flush ruleset` cannot
remove) and in nftables (vni_binding.py). Together: one key -> one address -> one VNI.

Peers the desired state does not list are removed on every reconcile: a revoked device
cannot handshake again (the gateway no longer knows its key), and its current session dies
with the peer.
"""

from __future__ import annotations

import ipaddress
import stat
import time
from pathlib import Path
from typing import Any

from cjb.common.wireguard import DeviceSpec, PeerSpec, WireGuard, WireGuardError
from cjb.common.wireguard.keys import b64_to_raw, short
from cjb.common.wireguard.model import Endpoint
from cjb.gateway.dataplane.config import GatewayConfig, WireGuardSpec
from cjb.gateway.dataplane.status import read_status

RESTART_KEEPALIVE = 25  # seconds; only until the next reconcile after a re-creation


def read_private_key(path: Path) -> str:
    """The base64 private key from a 0600 file; refuses a file others can read."""
    try:
        st = path.stat()
        text = path.read_text().strip()
    except FileNotFoundError:
        raise WireGuardError(
            f"{path}: no WireGuard private key (run `cjb gateway init`, or `wg genkey > {path}`)"
        ) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise WireGuardError(f"{path}: readable by others; run `chmod 600 {path}`")
    b64_to_raw(text, str(path))  # validate; the message never includes the key
    return text


def desired_device(
    cfg: GatewayConfig, private_key: str, seeds: dict[str, Endpoint] | None = None
) -> DeviceSpec:
    """The interface's keys and peers. `seeds`: tenant -> last known appliance endpoint,
    given only right after the interface was (re)created (see `reconcile_wireguard`)."""
    assert cfg.wireguard is not None
    seeds = seeds or {}
    peers = tuple(
        PeerSpec(
            t.wireguard_public_key,
            (ipaddress.ip_network(f"{t.appliance}/128"),),
            seeds.get(t.name),
            RESTART_KEEPALIVE if t.name in seeds else 0,
        )
        for t in cfg.tenants
        if t.wireguard_public_key is not None
    )
    return DeviceSpec(private_key, cfg.wireguard.listen_port, peers)


def previous_endpoints(status_file: Path) -> dict[str, Endpoint]:
    """Tenant -> the appliance endpoint the last status file saw (best effort)."""
    status = read_status(status_file) or {}
    tenants = status.get("tenants")
    if not isinstance(tenants, dict):
        return {}
    return endpoints_of(
        {n: t["wireguard"] for n, t in tenants.items() if isinstance(t, dict) and "wireguard" in t}
    )


def endpoints_of(peers: dict[str, Any]) -> dict[str, Endpoint]:
    """Tenant -> endpoint, from `peer_status` entries (or their JSON form)."""
    found: dict[str, Endpoint] = {}
    for name, wg in peers.items():
        text = wg.get("endpoint") if isinstance(wg, dict) else None
        if isinstance(text, str):
            try:
                found[name] = Endpoint.parse(text)
            except WireGuardError:
                continue
    return found


def reconcile_wireguard(wg: WireGuard, cfg: GatewayConfig) -> tuple[list[str], bool]:
    """Create (or adopt) the interface and make its peers match the tenants; returns the
    changes and whether the interface was created now (then call `restore_sessions` once
    it is up)."""
    spec: WireGuardSpec | None = cfg.wireguard
    if spec is None:
        return [], False
    key = read_private_key(spec.private_key_file)
    changes = []
    created = wg.ensure(None, spec.ifname, spec.log_file)
    if created:
        changes.append(f"create wireguard interface {spec.ifname} ({wg.backend.name})")
    changes += [
        f"{spec.ifname}: {c}" for c in wg.apply(None, spec.ifname, desired_device(cfg, key))
    ]
    return changes, created


def restore_sessions(
    wg: WireGuard, cfg: GatewayConfig, endpoints: dict[str, Endpoint] | None = None
) -> list[str]:
    """After a re-creation (the interface is up again): make the gateway re-handshake.

    A new interface has lost every session and every roamed endpoint; the appliances would
    only notice after WireGuard's rekey timeout (~15 s of unanswered traffic, whitepaper
    §6.4). So the peers get their last known endpoints from the status file and a
    keepalive: turning a keepalive on sends one at once, which makes the gateway initiate
    the handshake itself. The next reconcile sets the keepalive back to 0.
    """
    spec = cfg.wireguard
    if spec is None:
        return []
    seeds = endpoints if endpoints else previous_endpoints(cfg.status_file)
    if not seeds:
        return []
    device = desired_device(cfg, read_private_key(spec.private_key_file), seeds)
    return [f"{spec.ifname}: {c}" for c in wg.apply(None, spec.ifname, device)]


def alive(wg: WireGuard, cfg: GatewayConfig) -> bool:
    return cfg.wireguard is None or wg.exists(None, cfg.wireguard.ifname)


def peer_status(wg: WireGuard, cfg: GatewayConfig) -> dict[str, dict[str, object]]:
    """Per tenant: its peer's last handshake, endpoint and byte counters (for status/metrics)."""
    if cfg.wireguard is None:
        return {}
    device = wg.show(None, cfg.wireguard.ifname)
    now = time.time()
    out: dict[str, dict[str, object]] = {}
    for t in cfg.tenants:
        if t.wireguard_public_key is None:
            continue
        peer = device.peer(t.wireguard_public_key)
        if peer is None:
            out[t.name] = {"peer": short(t.wireguard_public_key), "configured": False}
            continue
        age = peer.handshake_age(now)
        out[t.name] = {
            "peer": short(t.wireguard_public_key),
            "configured": True,
            "endpoint": str(peer.endpoint) if peer.endpoint else None,
            "last_handshake": peer.last_handshake,
            "handshake_age_seconds": None if age is None else round(age, 1),
            # WireGuard rekeys every 2 minutes under traffic and keepalives keep idle
            # sessions; a handshake older than 180 s (REJECT_AFTER_TIME) means no session.
            "up": age is not None and age < 180,
            "rx_bytes": peer.rx_bytes,
            "tx_bytes": peer.tx_bytes,
        }
    return out
