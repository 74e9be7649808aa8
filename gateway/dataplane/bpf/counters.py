"""The fast path's per-tenant counters: slot names (the enum in xlat.bpf.c, same order)
and their sum over CPUs, as plain values for the status file."""

from __future__ import annotations

from dataclasses import dataclass

COUNTER_NAMES = (
    "to_service_frames",
    "to_service_bytes",
    "to_lan_frames",
    "to_lan_bytes",
    "to_native_frames",
    "to_native_bytes",
    "from_native_frames",
    "from_native_bytes",
    "slow_path_tunnel",
    "slow_path_service",
    "errors",
)


@dataclass(frozen=True, slots=True)
class FastPathCounters:
    values: tuple[int, ...]

    @classmethod
    def from_per_cpu(cls, per_slot: list[list[int]]) -> FastPathCounters:
        return cls(tuple(sum(cpus) for cpus in per_slot))

    def as_dict(self) -> dict[str, int]:
        return dict(zip(COUNTER_NAMES, self.values, strict=True))

    def __getitem__(self, name: str) -> int:
        return self.values[COUNTER_NAMES.index(name)]
