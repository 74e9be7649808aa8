"""One-time enrollment nonces, bounded in memory (sans-IO: time and randomness are arguments).

A nonce is good once, for `ttl` seconds. Memory stays under `cap` issued plus `cap` used entries
whatever a client floods us with: past the cap the oldest entry is forgotten (its device just
asks again), and entries leave once they are older than twice the TTL. Keeping expired and used
nonces a while longer lets a refusal say *why* ("expired" or "replayed") instead of "unknown".
`consume` is plain synchronous code: called from one event loop it is atomic, so two requests
carrying the same nonce can never both see "ok".
"""

from __future__ import annotations

import base64
import enum
from collections import OrderedDict


class NonceVerdict(enum.Enum):
    OK = "ok"
    EXPIRED = "nonce-expired"
    REPLAYED = "nonce-replayed"
    UNKNOWN = "nonce-unknown"


class NonceStore:
    def __init__(self, ttl: float, cap: int) -> None:
        self.ttl = ttl
        self.cap = cap
        self._issued: OrderedDict[str, float] = OrderedDict()  # nonce -> issued at
        self._used: OrderedDict[str, float] = OrderedDict()  # nonce -> used at
        self.evicted = 0  # forgotten before expiry because of the cap (a flood, or busy)

    def __len__(self) -> int:
        return len(self._issued) + len(self._used)

    def issue(self, now: float, random32: bytes) -> str:
        """A new nonce: 32 random bytes, base64url without padding (protocol.Nonce)."""
        if len(random32) != 32:
            raise ValueError("a nonce needs 32 random bytes")
        self._sweep(now)
        nonce = base64.urlsafe_b64encode(random32).rstrip(b"=").decode()
        while len(self._issued) >= self.cap:
            self._issued.popitem(last=False)
            self.evicted += 1
        self._issued[nonce] = now
        return nonce

    def consume(self, nonce: str, now: float) -> NonceVerdict:
        if nonce in self._used:
            return NonceVerdict.REPLAYED
        issued_at = self._issued.pop(nonce, None)
        if issued_at is None:
            return NonceVerdict.UNKNOWN
        self._remember_used(nonce, now)
        if now - issued_at > self.ttl or now < issued_at:
            return NonceVerdict.EXPIRED
        return NonceVerdict.OK

    def _remember_used(self, nonce: str, now: float) -> None:
        while len(self._used) >= self.cap:
            self._used.popitem(last=False)
        self._used[nonce] = now

    def _sweep(self, now: float) -> None:
        horizon = now - 2 * self.ttl
        for table in (self._issued, self._used):
            while table:
                _, at = next(iter(table.items()))
                if at >= horizon:
                    break
                table.popitem(last=False)
