"""Exponential backoff with full jitter (sans-IO: randomness is passed in).

Full jitter (delay uniform in [0, min(cap, base * 2**attempt)]) spreads a fleet of
appliances that all lost their gateway at the same moment, so they do not come back as one
thundering herd when it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Random = Callable[[], float]  # uniform in [0, 1), e.g. random.Random().random


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float = 1.0
    cap: float = 300.0  # 5 minutes: a revoked or not yet imported unit retries slowly

    def ceiling(self, attempt: int) -> float:
        """The largest delay before retry number `attempt` (1 = the first retry)."""
        exponent = min(max(attempt - 1, 0), 62)  # 2**62 s is far beyond any cap
        return float(min(self.cap, self.base * (1 << exponent)))

    def delay(self, attempt: int, rng: Random) -> float:
        return rng() * self.ceiling(attempt)
