"""Per-source token buckets (sans-IO: time is an argument), bounded in the number of sources.

A source is an IPv4 address or an IPv6 /64 (`source_key`): one IPv6 subscriber usually gets a
whole /64 (RFC 6177), so limiting per /128 would let a single host walk around its limit.
Past `max_clients` the least recently seen source is forgotten, which at worst gives a
forgotten source a fresh burst: memory stays bounded under a flood from many addresses.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict

IPV6_SOURCE_PREFIX = 64


def source_key(remote: str | None) -> str:
    """The rate-limit and nonce-quota key of a peer address: IPv4 (also IPv4-mapped IPv6) as
    itself, IPv6 as its /64; anything unparsable (a UNIX socket, None) as one shared key."""
    try:
        addr = ipaddress.ip_address((remote or "").split("%", 1)[0])
    except ValueError:
        return "?"
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        net = ipaddress.IPv6Network((addr, IPV6_SOURCE_PREFIX), strict=False)
        return str(net)
    return str(addr)


class RateLimiter:
    def __init__(self, rate: float, burst: int, max_clients: int = 4096) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, t)
        self.refused = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: str, now: float) -> float:
        tokens, last = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + max(0.0, now - last) * self.rate)

    def blocked(self, key: str, now: float) -> bool:
        """Would `allow` refuse now? Spends nothing (for limits on failures only)."""
        return self._tokens(key, now) < 1.0

    def allow(self, key: str, now: float) -> bool:
        tokens = self._tokens(key, now)
        self._buckets.pop(key, None)
        ok = tokens >= 1.0
        if ok:
            tokens -= 1.0
        else:
            self.refused += 1
        while len(self._buckets) >= self.max_clients:
            self._buckets.popitem(last=False)
        self._buckets[key] = (tokens, now)
        return ok
