"""The WireGuard cross-platform userspace API (UAPI) text, both ways (sans-IO).

Protocol (wireguard.com/xplatform): a request is `get=1\n\n` or `set=1\n` followed by
`key=value` lines and an empty line; keys are hex. In a response, `public_key=` starts a
peer's section and `errno=N` ends it; errno 0 is success. Unknown keys are skipped, so a
newer wireguard-go that adds fields still parses.
"""

from __future__ import annotations

import ipaddress

from cjb.common.wireguard.keys import b64_to_hex, hex_to_b64
from cjb.common.wireguard.model import (
    DeviceStatus,
    Endpoint,
    Network,
    PeerStatus,
    WireGuardError,
)
from cjb.common.wireguard.plan import SetRequest

GET_REQUEST = b"get=1\n\n"


def render_set(request: SetRequest) -> bytes:
    lines = ["set=1"]
    if request.private_key is not None:
        lines.append(f"private_key={b64_to_hex(request.private_key, 'private key')}")
    if request.listen_port is not None:
        lines.append(f"listen_port={request.listen_port}")
    for op in request.peers:
        lines.append(f"public_key={b64_to_hex(op.public_key, 'peer public key')}")
        if op.remove:
            lines.append("remove=true")
            continue
        if op.endpoint is not None:
            lines.append(f"endpoint={op.endpoint}")
        if op.keepalive is not None:
            lines.append(f"persistent_keepalive_interval={op.keepalive}")
        if op.allowed_ips is not None:
            lines.append("replace_allowed_ips=true")
            lines += [f"allowed_ip={n}" for n in op.allowed_ips]
    return ("\n".join(lines) + "\n\n").encode()


def response_errno(text: str) -> int:
    """The errno a response ends with; raises when there is none (a truncated reply)."""
    for line in reversed(text.splitlines()):
        if line.startswith("errno="):
            try:
                return int(line[6:])
            except ValueError:
                break
    raise WireGuardError(f"UAPI response without errno: {text[-80:]!r}")


class _PeerBuilder:
    def __init__(self, public_key: str) -> None:
        self.public_key = public_key
        self.allowed: list[Network] = []
        self.endpoint: Endpoint | None = None
        self.keepalive = 0
        self.hs_sec = 0
        self.hs_nsec = 0
        self.rx = 0
        self.tx = 0

    def build(self) -> PeerStatus:
        handshake = None
        if self.hs_sec or self.hs_nsec:
            handshake = self.hs_sec + self.hs_nsec / 1e9
        return PeerStatus(
            self.public_key,
            tuple(self.allowed),
            self.endpoint,
            self.keepalive,
            handshake,
            self.rx,
            self.tx,
        )


def parse_get(text: str) -> DeviceStatus:
    errno = response_errno(text)
    if errno != 0:
        raise WireGuardError(f"UAPI get failed: errno {errno}")
    private_key: str | None = None
    listen_port = 0
    peers: list[PeerStatus] = []
    peer: _PeerBuilder | None = None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        try:
            if key == "public_key":
                if peer is not None:
                    peers.append(peer.build())
                peer = _PeerBuilder(hex_to_b64(value, "peer public key"))
            elif peer is None:
                if key == "private_key":
                    private_key = hex_to_b64(value, "private key")
                elif key == "listen_port":
                    listen_port = int(value)
            elif key == "allowed_ip":
                peer.allowed.append(ipaddress.ip_network(value, strict=False))
            elif key == "endpoint":
                peer.endpoint = Endpoint.parse(value)
            elif key == "persistent_keepalive_interval":
                peer.keepalive = int(value)
            elif key == "last_handshake_time_sec":
                peer.hs_sec = int(value)
            elif key == "last_handshake_time_nsec":
                peer.hs_nsec = int(value)
            elif key == "rx_bytes":
                peer.rx = int(value)
            elif key == "tx_bytes":
                peer.tx = int(value)
        except ValueError as exc:
            raise WireGuardError(f"UAPI get: bad value for {key}: {exc}") from None
    if peer is not None:
        peers.append(peer.build())
    return DeviceStatus(private_key, listen_port, tuple(peers))
