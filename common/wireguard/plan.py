"""Desired vs observed -> the minimal change set (sans-IO).

Idempotent by construction: when the device already matches, the plan is empty and nothing
is sent. Peers the spec does not list are removed, so the spec is the whole truth (the
gateway's registry decides who may handshake at all). A peer whose allowed IPs differ gets
them replaced in one step (`replace_allowed_ips`), so there is no window with none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cjb.common.wireguard.keys import short
from cjb.common.wireguard.model import DeviceSpec, DeviceStatus, Endpoint, Network


@dataclass(frozen=True, slots=True)
class PeerOp:
    public_key: str
    remove: bool = False
    allowed_ips: tuple[Network, ...] | None = None  # None: unchanged; else replace with these
    endpoint: Endpoint | None = None  # None: unchanged
    keepalive: int | None = None  # None: unchanged


@dataclass(frozen=True, slots=True)
class SetRequest:
    private_key: str | None = field(default=None, repr=False)  # base64; None: unchanged
    listen_port: int | None = None
    peers: tuple[PeerOp, ...] = ()

    @property
    def empty(self) -> bool:
        return self.private_key is None and self.listen_port is None and not self.peers


def _ips(ips: tuple[Network, ...]) -> frozenset[Network]:
    return frozenset(ips)


def plan(desired: DeviceSpec, observed: DeviceStatus) -> tuple[SetRequest, list[str]]:
    changes: list[str] = []
    private_key = None
    if observed.private_key != desired.private_key:
        private_key = desired.private_key
        changes.append("set private key")
    listen_port = None
    if desired.listen_port is not None and desired.listen_port != observed.listen_port:
        listen_port = desired.listen_port
        changes.append(f"set listen port {listen_port}")
    ops: list[PeerOp] = []
    wanted = {p.public_key for p in desired.peers}
    for have in observed.peers:
        if have.public_key not in wanted:
            ops.append(PeerOp(have.public_key, remove=True))
            changes.append(f"remove peer {short(have.public_key)}")
    for want in desired.peers:
        have_peer = observed.peer(want.public_key)
        if have_peer is None:
            ops.append(
                PeerOp(
                    want.public_key,
                    allowed_ips=want.allowed_ips,
                    endpoint=want.endpoint,
                    keepalive=want.keepalive,
                )
            )
            ips = ",".join(str(n) for n in want.allowed_ips) or "none"
            changes.append(f"add peer {short(want.public_key)} allowed-ips {ips}")
            continue
        allowed = None
        if _ips(have_peer.allowed_ips) != _ips(want.allowed_ips):
            allowed = want.allowed_ips
        endpoint = None
        if want.endpoint is not None and want.endpoint != have_peer.endpoint:
            endpoint = want.endpoint
        keepalive = want.keepalive if want.keepalive != have_peer.keepalive else None
        if allowed is None and endpoint is None and keepalive is None:
            continue
        ops.append(
            PeerOp(want.public_key, allowed_ips=allowed, endpoint=endpoint, keepalive=keepalive)
        )
        what = [
            name
            for name, v in (
                ("allowed-ips", allowed),
                ("endpoint", endpoint),
                ("keepalive", keepalive),
            )
            if v is not None
        ]
        changes.append(f"update peer {short(want.public_key)} {' '.join(what)}")
    return SetRequest(private_key, listen_port, tuple(ops)), changes
