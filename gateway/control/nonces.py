"""One-time enrollment nonces, bounded in memory (sans-IO: time and randomness are arguments).

A nonce is good once, for `ttl` seconds. Memory stays under `cap` issued plus `cap` used entries
whatever clients flood us with, and entries leave once they are older than twice the TTL.
Keeping expired and used nonces a while longer lets a refusal say *why* ("expired" or
"replayed") instead of "unknown".

Eviction is per source (ratelimit.source_key: an IPv4 address or an IPv6 /64): a source holds
at most `per_source` issued nonces, past which its own oldest is forgotten; when the whole store
is full, the oldest nonce of the source holding the most goes (of equal holders, the one that
asked last). So one source only ever evicts its own nonces, and a flood from many sources
evicts a quiet device's nonce only once every flooding source holds fewer than that device.
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
    def __init__(self, ttl: float, cap: int, per_source: int | None = None) -> None:
        self.ttl = ttl
        self.cap = cap
        self.per_source = min(cap, per_source if per_source is not None else cap)
        # nonce -> (issued at, source), oldest first
        self._issued: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._by_source: dict[
            str, OrderedDict[str, float]
        ] = {}  # source -> its nonces, oldest first
        self._used: OrderedDict[str, float] = OrderedDict()  # nonce -> used at
        self.evicted = 0  # forgotten before expiry because of a cap (a flood, or busy)
        self.evicted_other_source = 0  # of which: taken from a source other than the issuer's

    def __len__(self) -> int:
        return len(self._issued) + len(self._used)

    def held_by(self, source: str) -> int:
        return len(self._by_source.get(source, ()))

    def issue(self, now: float, random32: bytes, source: str = "?") -> str:
        """A new nonce: 32 random bytes, base64url without padding (protocol.Nonce)."""
        if len(random32) != 32:
            raise ValueError("a nonce needs 32 random bytes")
        self._sweep(now)
        nonce = base64.urlsafe_b64encode(random32).rstrip(b"=").decode()
        # Most recently active source last: among equal holders, the active one pays.
        mine = self._by_source.pop(source, None) or OrderedDict()
        self._by_source[source] = mine
        while len(mine) >= self.per_source:
            self._forget_oldest(source)
        while len(self._issued) >= self.cap:
            biggest = max(reversed(self._by_source), key=lambda s: len(self._by_source[s]))
            if biggest != source:
                self.evicted_other_source += 1
            self._forget_oldest(biggest)
        self._issued[nonce] = (now, source)
        mine[nonce] = now
        self._by_source[source] = mine  # again: evicting its last entry may have dropped it
        return nonce

    def consume(self, nonce: str, now: float) -> NonceVerdict:
        if nonce in self._used:
            return NonceVerdict.REPLAYED
        entry = self._issued.pop(nonce, None)
        if entry is None:
            return NonceVerdict.UNKNOWN
        issued_at, source = entry
        self._drop_from_source(source, nonce)
        self._remember_used(nonce, now)
        if now - issued_at > self.ttl or now < issued_at:
            return NonceVerdict.EXPIRED
        return NonceVerdict.OK

    def _forget_oldest(self, source: str) -> None:
        mine = self._by_source[source]
        nonce, _ = mine.popitem(last=False)
        del self._issued[nonce]
        self.evicted += 1
        if not mine:
            del self._by_source[source]

    def _drop_from_source(self, source: str, nonce: str) -> None:
        mine = self._by_source.get(source)
        if mine is not None:
            mine.pop(nonce, None)
            if not mine:
                del self._by_source[source]

    def _remember_used(self, nonce: str, now: float) -> None:
        while len(self._used) >= self.cap:
            self._used.popitem(last=False)
        self._used[nonce] = now

    def _sweep(self, now: float) -> None:
        horizon = now - 2 * self.ttl
        while self._issued:
            nonce, (at, source) = next(iter(self._issued.items()))
            if at >= horizon:
                break
            self._issued.popitem(last=False)
            self._drop_from_source(source, nonce)
        while self._used:
            _, at = next(iter(self._used.items()))
            if at >= horizon:
                break
            self._used.popitem(last=False)
