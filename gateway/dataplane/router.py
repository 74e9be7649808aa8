"""Which port a frame goes to, per tenant: the worker's decisions without any sockets.

  tunnel  --IPv6------------------------------> native   (as is, if the tenant has one)
  tunnel  --everything else--> translator TO_SERVICE --> emits
  service ----------------> translator TO_LAN -------> emits
  native  ------------------------------------> tunnel   (as is)
Emits leave on the port their `Side` names (LAN = tunnel). Nothing a frame contains can
raise out of `route`: an exception inside the translator is its counted INTERNAL_ERROR
drop, one around it a counted "worker-error" drop; either way `last_error` keeps the
exception's type and message (the worker logs them, `cjb gateway status` shows them).
With a `LanGuard`, frames from the tunnel that are never for the cloud (unknown unicast,
ARP claiming the service address: lan_guard.py) are dropped before the translator, counted
by the guard's reason.
`VnetFrameRouter` is the same for frames that carry a virtio_net_hdr (the worker's
"packet-vnet" mode): IPv6 to and from the native port keeps its header as is.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from cjb.gateway.dataplane.lan_guard import LanGuard
from cjb.gateway.xlat import Direction, DropReason, Side, XlatResult
from cjb.gateway.xlat.errors import RecentErrors
from cjb.gateway.xlat.gso import F_NEEDS_CSUM, NO_VNET, VnetTranslator

ETHERTYPE_IPV6 = b"\x86\xdd"


class Port(enum.Enum):
    TUNNEL = "tunnel"
    SERVICE = "service"
    NATIVE = "native"


_SIDE_PORT = {Side.LAN: Port.TUNNEL, Side.SERVICE: Port.SERVICE}


class TranslatorLike(Protocol):
    errors: RecentErrors

    def translate(self, frame: bytes, direction: Direction) -> XlatResult: ...


_INTERNAL_ERROR = DropReason.INTERNAL_ERROR.value


@dataclass
class PortCounters:
    rx_frames: int = 0
    rx_bytes: int = 0
    tx_frames: int = 0
    tx_bytes: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "rx_frames": self.rx_frames,
            "rx_bytes": self.rx_bytes,
            "tx_frames": self.tx_frames,
            "tx_bytes": self.tx_bytes,
        }


@dataclass
class RouterCounters:
    ports: dict[Port, PortCounters] = field(
        default_factory=lambda: {p: PortCounters() for p in Port}
    )
    drops: Counter[str] = field(default_factory=Counter)
    last_error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "ports": {p.value: c.as_dict() for p, c in self.ports.items()},
            "drops": dict(sorted(self.drops.items())),
            "last_error": self.last_error,
        }


class FrameRouter:
    def __init__(
        self, translator: TranslatorLike, native: bool, guard: LanGuard | None = None
    ) -> None:
        self.translator = translator
        self.native = native
        self.guard = guard
        self.counters = RouterCounters()

    def _guarded(self, frame: bytes | memoryview) -> bool:
        """True (and counted) when the guard drops this frame from the tunnel."""
        reason = self.guard.check(frame) if self.guard is not None else None
        if reason is None:
            return False
        self.counters.drops[reason] += 1
        return True

    def route(self, port: Port, frame: bytes) -> list[tuple[Port, bytes]]:
        rx = self.counters.ports[port]
        rx.rx_frames += 1
        rx.rx_bytes += len(frame)
        if port is Port.NATIVE:
            return [(Port.TUNNEL, frame)]
        if port is Port.TUNNEL and self._guarded(frame):
            return []
        if port is Port.TUNNEL and frame[12:14] == ETHERTYPE_IPV6:
            if self.native:
                return [(Port.NATIVE, frame)]
            self.counters.drops["native-ipv6-no-link"] += 1
            return []
        direction = Direction.TO_SERVICE if port is Port.TUNNEL else Direction.TO_LAN
        try:
            result = self.translator.translate(frame, direction)
        except Exception as exc:  # one bad frame must never stop the worker: count it
            self.counters.drops["worker-error"] += 1
            self.counters.last_error = f"{type(exc).__name__}: {exc}"[:200]
            return []
        if result.drop is not None:
            self.counters.drops[result.drop.value] += 1
            if result.drop is DropReason.INTERNAL_ERROR:
                self.translator_raised()
        return [(_SIDE_PORT[e.side], e.frame) for e in result.emits]

    def translator_raised(self) -> None:
        """The translator caught an exception on the last frame: keep what it was."""
        error = self.translator.errors.last()
        if error is not None:
            self.counters.last_error = f"translator: {error}"[:300]

    def sent(self, port: Port, frame: bytes) -> None:
        tx = self.counters.ports[port]
        tx.tx_frames += 1
        tx.tx_bytes += len(frame)

    def send_failed(self, port: Port, exc: OSError) -> None:
        self.counters.drops[f"tx-error-{port.value}"] += 1
        self.counters.last_error = f"send on {port.value}: {exc.strerror}"


VnetOut = tuple[Port, bytes | memoryview, tuple[bytes | memoryview, ...]]


class VnetFrameRouter(FrameRouter):
    """Routes (vnet header, frame) pairs; frames may be GSO super-frames."""

    def __init__(
        self, translator: VnetTranslator, native: bool, guard: LanGuard | None = None
    ) -> None:
        super().__init__(translator.reference, native, guard)
        self.vnet = translator

    def route_vnet(self, port: Port, vnet: memoryview, frame: memoryview) -> list[VnetOut]:
        rx = self.counters.ports[port]
        rx.rx_frames += 1
        rx.rx_bytes += len(frame)
        if port is Port.NATIVE:
            return [(Port.TUNNEL, vnet, (frame,))]
        if port is Port.TUNNEL and self._guarded(frame):
            return []
        if port is Port.TUNNEL and frame[12:14] == ETHERTYPE_IPV6:
            if self.native:
                return [(Port.NATIVE, vnet, (frame,))]
            self.counters.drops["native-ipv6-no-link"] += 1
            return []
        direction = Direction.TO_SERVICE if port is Port.TUNNEL else Direction.TO_LAN
        try:
            if not vnet[0] & F_NEEDS_CSUM and not vnet[1] and len(vnet) == len(NO_VNET):
                # A complete wire frame (most small ones): straight to the reference, as
                # VnetTranslator would send it, without its wrapping per frame.
                plain = self.vnet.reference.translate(frame, direction)
                if plain.drop is not None:
                    self.counters.drops[plain.drop.value] += 1
                    if plain.drop is DropReason.INTERNAL_ERROR:
                        self.translator_raised()
                return [(_SIDE_PORT[e.side], NO_VNET, (e.frame,)) for e in plain.emits]
            result = self.vnet.translate(vnet, frame, direction)
        except Exception as exc:  # one bad frame must never stop the worker: count it
            self.counters.drops["worker-error"] += 1
            self.counters.last_error = f"{type(exc).__name__}: {exc}"[:200]
            return []
        if result.drop is not None:
            self.counters.drops[result.drop] += 1
            if result.drop == _INTERNAL_ERROR:
                self.translator_raised()
        return [(_SIDE_PORT[e.side], e.vnet, e.frame) for e in result.emits]
