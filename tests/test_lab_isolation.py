"""Isolation matrix, 8 tenants with the same LAN addresses: every LAN client sends unicast,
ARP, broadcast and multicast (IPv4 and native IPv6) frames carrying a per-sender nonce;
captures on every service and native link must show only that tenant's nonces.

   site1..site8  (all 192.168.0.10)        service host
      │ eth0                               tenantK  (translated, fe80::c0a8:64)
   applianceK ── VXLAN VNI K ── internet ── gateway ── worker K ──┤
                                                                  n-tenantK (native IPv6)
"""

from __future__ import annotations

import re
import secrets
import socket
import time
from collections.abc import Iterator

import pytest
from labkit import Capture, lab, send_frames

from cjb.common.netlink import netns
from cjb.lab.state import LabState

pytestmark = [pytest.mark.root, pytest.mark.slow]

TENANTS = 8


@pytest.fixture(scope="module")
def lab8() -> Iterator[LabState]:
    pytest.importorskip("scapy", reason="scapy builds the crafted frames")
    with lab(TENANTS) as state:
        yield state


def _nonce_mac(k: int) -> str:
    return f"02:cb:00:00:00:{k:02x}"


def _frames(k: int, token: str) -> list[bytes]:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import ARP, Ether

    mac = f"02:00:5e:00:{k:02x}:0a"
    nonce = f"CJBN{k:02d}{token}".encode()
    frames = [
        # ARP: the nonce is the sender's hardware address (ARP has no payload to carry it).
        Ether(src=_nonce_mac(k), dst="ff:ff:ff:ff:ff:ff")
        / ARP(op=1, hwsrc=_nonce_mac(k), psrc="192.168.0.10", pdst="192.168.0.100"),
        Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
        / IP(src="192.168.0.10", dst="192.168.0.255")
        / UDP(sport=4000, dport=9999)
        / (nonce + b"-bcast"),
        Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
        / IP(src="192.168.0.10", dst="255.255.255.255")
        / UDP(sport=4000, dport=9999)
        / (nonce + b"-lbcast"),
        Ether(src=mac, dst="01:00:5e:00:00:fb")
        / IP(src="192.168.0.10", dst="224.0.0.251", ttl=255)
        / UDP(sport=5353, dport=5353)
        / (nonce + b"-mcast4"),
        Ether(src=mac, dst="33:33:00:00:00:01")
        / IPv6(src="fe80::5eff:fe00:10a", dst="ff02::1", hlim=255)
        / UDP(sport=4000, dport=9999)
        / (nonce + b"-mcast6"),
    ]
    return [bytes(f) for f in frames]


def test_isolation_matrix(lab8: LabState) -> None:
    token = secrets.token_hex(3)
    service = lab8.namespaces["service"]
    links = [f"tenant{k}" for k in range(1, TENANTS + 1)]
    links += [f"n-tenant{k}" for k in range(1, TENANTS + 1)]
    cap = Capture(service, links)
    try:
        for k in range(1, TENANTS + 1):
            site = lab8.namespaces[f"site{k}"]
            send_frames(site, "eth0", _frames(k, token))
            # Unicast through the client's own stack: ARP (-> NDP) resolves the service MAC.
            with netns(site), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for _ in range(3):
                    s.sendto(f"CJBN{k:02d}{token}-ucast".encode(), ("192.168.0.100", 9999))
                    time.sleep(0.05)
        time.sleep(1.0)
        frames = cap.drain()
    finally:
        cap.close()

    pattern = re.compile(rb"CJBN(\d\d)" + token.encode() + rb"-(\w+)")
    matrix: dict[str, set[tuple[int, str]]] = {}
    for link, got in frames.items():
        seen: set[tuple[int, str]] = set()
        for frame in got:
            seen |= {(int(m.group(1)), m.group(2).decode()) for m in pattern.finditer(frame)}
            for j in range(1, TENANTS + 1):
                if bytes.fromhex(_nonce_mac(j).replace(":", "")) in frame:
                    seen.add((j, "arp"))
        matrix[link] = seen

    for k in range(1, TENANTS + 1):
        for link in (f"tenant{k}", f"n-tenant{k}"):
            foreign = {s for s in matrix[link] if s[0] != k}
            assert not foreign, f"{link} saw other tenants' frames: {sorted(foreign)}"
        # Positive controls: each path really carried this tenant's traffic.
        assert (k, "ucast") in matrix[f"tenant{k}"], matrix[f"tenant{k}"]
        assert (k, "arp") in matrix[f"tenant{k}"], "ARP was not translated to NDP"
        assert (k, "mcast6") in matrix[f"n-tenant{k}"], matrix[f"n-tenant{k}"]
