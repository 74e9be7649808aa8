"""Per-client token buckets (sans-IO: time is an argument), bounded in the number of clients.

Past `max_clients` the least recently seen client is forgotten, which at worst gives a
forgotten client a fresh burst: memory stays bounded under a flood from many addresses.
"""

from __future__ import annotations

from collections import OrderedDict


class RateLimiter:
    def __init__(self, rate: float, burst: int, max_clients: int = 4096) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, t)
        self.refused = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: str, now: float) -> bool:
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        ok = tokens >= 1.0
        if ok:
            tokens -= 1.0
        else:
            self.refused += 1
        while len(self._buckets) >= self.max_clients:
            self._buckets.popitem(last=False)
        self._buckets[key] = (tokens, now)
        return ok
