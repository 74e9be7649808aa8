"""Finding a free IPv4 address on the LAN by ARP probing, RFC 5227 §2.1.1 (sans-IO).

The cloud services appear on the customer's LAN at one IPv4 address; before the appliance
reports it at enrollment it must be sure no LAN host uses it. Frames in (`on_frame`), frames
out (`on_timer`), time and randomness passed in; `arp_probe_io.py` is the AF_PACKET adapter.

Per candidate (RFC 5227 §2.1.1): wait rand(0, PROBE_WAIT), send PROBE_NUM probes spaced
rand(PROBE_MIN, PROBE_MAX), then wait ANNOUNCE_WAIT. Any ARP whose sender IP is the candidate,
or any probe from another MAC whose target IP is the candidate, is a conflict: move on to the
next candidate. After MAX_CONFLICTS conflicts, start at most one new candidate per
RATE_LIMIT_INTERVAL. We never announce: the address belongs to the cloud side, which answers
for it through the tunnel.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cjb.appliance.backoff import Random
from cjb.common.packet.arp import OP_REQUEST, ArpPacket, build_arp, parse_arp
from cjb.common.packet.errors import Invalid
from cjb.common.packet.ethernet import (
    BROADCAST_MAC,
    ETH_HEADER_LEN,
    ETHERTYPE_ARP,
    ZERO_MAC,
    build_ethernet,
    parse_ethernet,
)

MAX_CANDIDATES = 64


@dataclass(frozen=True, slots=True)
class Timing:
    """RFC 5227 §1.1 constants, in seconds; tests shrink them."""

    probe_wait: float = 1.0
    probe_num: int = 3
    probe_min: float = 1.0
    probe_max: float = 2.0
    announce_wait: float = 2.0
    max_conflicts: int = 10
    rate_limit_interval: float = 60.0


class ProbeState(enum.Enum):
    PROBING = "probing"
    FREE = "free"
    EXHAUSTED = "exhausted"  # every candidate is in use


def candidates(
    prefix: ipaddress.IPv4Network,
    preferred: ipaddress.IPv4Address | None,
    exclude: Iterable[ipaddress.IPv4Address] = (),
    limit: int = MAX_CANDIDATES,
) -> list[ipaddress.IPv4Address]:
    """The preferred address first, then the hosts after it in order, wrapping around."""
    hosts = list(prefix.hosts()) if prefix.num_addresses <= 1 << 16 else []
    if not hosts:
        return [preferred] if preferred is not None else []
    skip = set(exclude)
    start = hosts.index(preferred) if preferred in hosts else 0
    ordered = hosts[start:] + hosts[:start]
    return [a for a in ordered if a not in skip][:limit]


@dataclass
class Prober:
    mac: bytes  # the probing interface's MAC (sender hardware address of our probes)
    candidates: Sequence[ipaddress.IPv4Address]
    rng: Random
    timing: Timing = field(default_factory=Timing)

    state: ProbeState = ProbeState.PROBING
    result: ipaddress.IPv4Address | None = None
    conflicts: list[tuple[ipaddress.IPv4Address, str]] = field(default_factory=list)
    drops: dict[str, int] = field(default_factory=dict)  # reason -> count (untrusted frames)
    _index: int = 0
    _sent: int = 0  # probes sent for the current candidate
    _due: float | None = None
    _last_start: float | None = None

    def start(self, now: float) -> None:
        if not self.candidates:
            self.state = ProbeState.EXHAUSTED
            self._due = None
            return
        self._begin(now)

    @property
    def current(self) -> ipaddress.IPv4Address | None:
        if self.state is not ProbeState.PROBING or self._index >= len(self.candidates):
            return None
        return self.candidates[self._index]

    def next_deadline(self) -> float | None:
        return self._due if self.state is ProbeState.PROBING else None

    def on_timer(self, now: float) -> list[bytes]:
        if self.state is not ProbeState.PROBING or self._due is None or now < self._due:
            return []
        t = self.timing
        if self._sent >= t.probe_num:
            # ANNOUNCE_WAIT passed with no conflict: the address is ours to report.
            self.state, self.result, self._due = ProbeState.FREE, self.current, None
            return []
        frame = self._probe(self.candidates[self._index])
        self._sent += 1
        if self._sent < t.probe_num:
            self._due = now + t.probe_min + self.rng() * (t.probe_max - t.probe_min)
        else:
            self._due = now + t.announce_wait
        return [frame]

    def on_frame(self, now: float, frame: bytes) -> None:
        candidate = self.current
        if candidate is None:
            return
        # §2.1.1: from the beginning of the probing process (the random initial wait
        # included) until ANNOUNCE_WAIT after the last probe, any such ARP is a conflict.
        arp = self._parse(frame)
        if arp is None:
            return
        target = candidate.packed
        if arp.sender_ip == target and arp.sender_mac != self.mac:
            self._conflict(now, candidate, f"{_mac(arp.sender_mac)} uses it")
        elif arp.is_probe and arp.target_ip == target and arp.sender_mac != self.mac:
            self._conflict(now, candidate, f"{_mac(arp.sender_mac)} is probing for it too")

    # -- internals ----------------------------------------------------------------------

    def _begin(self, now: float) -> None:
        t = self.timing
        start = now
        if len(self.conflicts) >= t.max_conflicts and self._last_start is not None:
            start = max(now, self._last_start + t.rate_limit_interval)
        self._last_start = start
        self._sent = 0
        self._due = start + self.rng() * t.probe_wait

    def _conflict(self, now: float, candidate: ipaddress.IPv4Address, why: str) -> None:
        self.conflicts.append((candidate, why))
        self._index += 1
        if self._index >= len(self.candidates):
            self.state, self._due = ProbeState.EXHAUSTED, None
            return
        self._begin(now)

    def _parse(self, frame: bytes) -> ArpPacket | None:
        eth = parse_ethernet(frame)
        if isinstance(eth, Invalid):
            self._drop("ethernet-invalid")
            return None
        if eth.ethertype != ETHERTYPE_ARP:
            self._drop("not-arp")
            return None
        arp = parse_arp(frame[ETH_HEADER_LEN:])
        if isinstance(arp, Invalid):
            self._drop("arp-invalid")
            return None
        return arp

    def _drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def _probe(self, candidate: ipaddress.IPv4Address) -> bytes:
        # §2.1.1: sender IP all zeroes, target hardware address all zeroes, broadcast.
        arp = ArpPacket(OP_REQUEST, self.mac, b"\x00" * 4, ZERO_MAC, candidate.packed)
        return build_ethernet(BROADCAST_MAC, self.mac, ETHERTYPE_ARP) + build_arp(arp)

    def describe(self) -> str:
        if self.state is ProbeState.FREE:
            return f"{self.result} is free ({len(self.conflicts)} in use before it)"
        if self.state is ProbeState.EXHAUSTED:
            tried = ", ".join(f"{a} ({why})" for a, why in self.conflicts[-3:])
            return f"no free address among {len(self.candidates)} candidates; last: {tried}"
        return f"probing {self.current} (probe {self._sent} of {self.timing.probe_num})"


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)
