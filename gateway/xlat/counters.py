"""Per-translator counters: frames and bytes each way, drops by reason."""

from __future__ import annotations

from dataclasses import dataclass, field

from cjb.gateway.xlat.result import Direction, DropReason, Side


@dataclass
class XlatCounters:
    frames_in: dict[Direction, int] = field(default_factory=lambda: dict.fromkeys(Direction, 0))
    bytes_in: dict[Direction, int] = field(default_factory=lambda: dict.fromkeys(Direction, 0))
    frames_out: dict[Side, int] = field(default_factory=lambda: dict.fromkeys(Side, 0))
    bytes_out: dict[Side, int] = field(default_factory=lambda: dict.fromkeys(Side, 0))
    drops: dict[DropReason, int] = field(default_factory=lambda: dict.fromkeys(DropReason, 0))

    def total_drops(self) -> int:
        return sum(self.drops.values())

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready snapshot (for status tables and metrics)."""
        return {
            "frames_in": {d.value: n for d, n in self.frames_in.items()},
            "bytes_in": {d.value: n for d, n in self.bytes_in.items()},
            "frames_out": {s.value: n for s, n in self.frames_out.items()},
            "bytes_out": {s.value: n for s, n in self.bytes_out.items()},
            "drops": {r.value: n for r, n in self.drops.items() if n},
        }
