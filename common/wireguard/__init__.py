"""WireGuard for CJB: desired-state configuration of one interface, on either backend.

  model.py      desired (`DeviceSpec`, `PeerSpec`) and observed (`DeviceStatus`) state
  keys.py       base64 <-> hex key forms, key generation (X25519 via cryptography)
  plan.py       sans-IO: desired vs observed -> the minimal `SetRequest` (+ readable changes)
  uapi.py       sans-IO: the cross-platform UAPI text (`set=1`/`get=1`) both ways
  userspace.py  `wireguard-go` backend: process started inside a netns, UAPI over its socket
  kernel.py     kernel-module backend: `ip link add type wireguard` + `wg` (genetlink)
  device.py     `WireGuard`: pick a backend automatically, ensure/apply/show/delete

Private keys travel only over the UAPI socket (or `wg`'s stdin), never argv or logs.
"""

from cjb.common.wireguard.device import WireGuard, select_backend
from cjb.common.wireguard.keys import generate_private_key, public_key
from cjb.common.wireguard.model import (
    DeviceSpec,
    DeviceStatus,
    PeerSpec,
    PeerStatus,
    WireGuardError,
)

__all__ = [
    "DeviceSpec",
    "DeviceStatus",
    "PeerSpec",
    "PeerStatus",
    "WireGuard",
    "WireGuardError",
    "generate_private_key",
    "public_key",
    "select_backend",
]
