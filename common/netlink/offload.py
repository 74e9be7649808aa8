"""Turn off checksum/segmentation offloads with the legacy SIOCETHTOOL ioctls.

Why: on veth, tx checksum offload hands AF_PACKET readers frames whose L4 checksum is
not finished (CHECKSUM_PARTIAL), and GRO/TSO/GSO hand them super-frames bigger than the
MTU. The translator needs real wire frames, so the ports it reads get these turned off.
No ethtool binary needed; the ioctl runs on a socket opened in the link's namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import socket
import struct

from cjb.common.netlink.kernel import NetlinkError

SIOCETHTOOL = 0x8946
# (get, set) command pairs from <linux/ethtool.h>
TX_CSUM = (0x16, 0x17)
SG = (0x18, 0x19)
TSO = (0x1E, 0x1F)
GSO = (0x23, 0x24)
GRO = (0x2B, 0x2C)
FEATURES = {"tx-checksum": TX_CSUM, "tso": TSO, "gso": GSO, "gro": GRO, "sg": SG}


class _EthtoolValue(ctypes.Structure):
    _fields_ = [("cmd", ctypes.c_uint32), ("data", ctypes.c_uint32)]


def _ioctl(sock: socket.socket, ifname: str, cmd: int, data: int = 0) -> int:
    value = _EthtoolValue(cmd, data)
    ifreq = struct.pack("16sP", ifname.encode(), ctypes.addressof(value))
    try:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
    except OSError as exc:
        raise NetlinkError(f"ethtool ioctl {cmd:#x} on {ifname}: {exc.strerror}") from exc
    return int(value.data)


def features(ifname: str) -> dict[str, bool]:
    """The current offload state, in the caller's namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        return {name: bool(_ioctl(sock, ifname, get)) for name, (get, _) in FEATURES.items()}


def offloads_on(ifname: str) -> bool:
    state = features(ifname)
    return any(state[name] for name in ("tx-checksum", "tso", "gso", "gro"))


def offloads_all_on(ifname: str) -> bool:
    state = features(ifname)
    return all(state[name] for name in ("tx-checksum", "sg", "tso", "gso", "gro"))


def enable_offloads(ifname: str) -> None:
    """For readers with PACKET_VNET_HDR: GRO makes super-frames on receive, and TSO with
    tx checksumming lets the far end send them; features a driver cannot change stay off."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        # Order matters: TSO needs tx checksumming and SG first.
        for name in ("tx-checksum", "sg", "tso", "gso", "gro"):
            get, set_ = FEATURES[name]
            if not _ioctl(sock, ifname, get):
                with contextlib.suppress(NetlinkError):
                    _ioctl(sock, ifname, set_, 1)


def disable_offloads(ifname: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        # Order matters: TSO depends on tx checksumming and SG.
        for name in ("gro", "gso", "tso", "tx-checksum"):
            get, set_ = FEATURES[name]
            if _ioctl(sock, ifname, get):
                # Some drivers keep a feature fixed on; what matters is what remains on,
                # which offloads_on() reports.
                with contextlib.suppress(NetlinkError):
                    _ioctl(sock, ifname, set_, 0)
