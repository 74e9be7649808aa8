"""Helpers for the tc-eBPF fast-path tests (tests/test_bpf_*.py): the skip when the fast
path cannot run here, and AF_PACKET sockets to inject frames and capture them."""

from __future__ import annotations

import os
import select
import socket

import pytest

from cjb.gateway.dataplane.selftest import read_incoming

ETH_P_ALL = 0x0003


def require_fast_path(why: str) -> None:
    """Skip (never pass) unless we are root and the BPF object builds; `why` says what the
    test creates that needs root."""
    if os.geteuid() != 0:
        pytest.skip(f"needs root: {why}")
    from cjb.gateway.dataplane.bpf import FastPathError, build_object

    try:
        build_object()
    except FastPathError as exc:
        pytest.skip(str(exc))


def packet_socket(ifname: str) -> socket.socket:
    """A non-blocking AF_PACKET socket on `ifname` in the current namespace, with a receive
    buffer that holds a whole burst."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
    sock.bind((ifname, ETH_P_ALL))
    sock.setblocking(False)
    return sock


def recv_all(sock: socket.socket, quiet: float = 0.3) -> list[bytes]:
    """Incoming frames until `sock` has been quiet for `quiet` seconds."""
    frames = []
    while select.select([sock], [], [], quiet)[0]:
        frames += read_incoming(sock)
    return frames
