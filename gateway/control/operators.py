"""Operator credentials: named, revocable bearer tokens, stored only as salted scrypt hashes.

A token reads `cjbop.<name>.<secret>`: the name says which hash to check (one KDF run per
request, whatever the number of credentials), the secret is 32 random bytes. The registry
keeps (name, salt, scrypt(secret)); comparison is constant-time (hmac.compare_digest). An
unknown or revoked name still costs one scrypt run, so timing does not tell names apart.
scrypt (hashlib, OpenSSL) with n=2**14, r=8, p=1 (RFC 7914 §2): ~16 MB and a few tens of
milliseconds per check. Successful checks are remembered for a minute keyed by a keyed hash
of the token, so a Prometheus scrape does not pay the KDF each time; the credential's row is
read on every request all the same, so a revocation (from any process) counts at once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PREFIX = "cjbop"
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "maxmem": 64 * 1024 * 1024, "dklen": 32}
CACHE_SECONDS = 60.0


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise ValueError(
            f"operator name {name!r}: use 1-32 of a-z, 0-9, '-', '_', starting with a letter"
        )
    return name


def derive(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)


@dataclass(frozen=True, slots=True)
class NewCredential:
    name: str
    token: str  # shown once; never stored
    salt: bytes
    digest: bytes


def new_credential(name: str) -> NewCredential:
    check_name(name)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    return NewCredential(name, f"{PREFIX}.{name}.{secret}", salt, derive(secret, salt))


def split_token(token: str) -> tuple[str, str] | None:
    """(name, secret) of a well-formed token, else None."""
    prefix, _, rest = token.partition(".")
    name, _, secret = rest.partition(".")
    if prefix != PREFIX or not NAME.match(name) or not secret or len(secret) > 128:
        return None
    return name, secret


class Verifier:
    """Checks a token against the stored hash of its name (sans-IO: the lookup and the clock
    are arguments); remembers recent successes."""

    def __init__(self) -> None:
        self._dummy_salt = secrets.token_bytes(16)
        self._dummy_hash = derive(secrets.token_urlsafe(32), self._dummy_salt)
        self._cache_key = secrets.token_bytes(32)
        self._recent: dict[bytes, tuple[str, float]] = {}  # keyed token hash -> (name, at)

    def _tag(self, token: str) -> bytes:
        return hmac.new(self._cache_key, token.encode(), hashlib.sha256).digest()

    def cached(self, token: str, now: float) -> str | None:
        hit = self._recent.get(self._tag(token))
        if hit is None or now - hit[1] > CACHE_SECONDS:
            return None
        return hit[0]

    def verify(self, token: str, stored: tuple[bytes, bytes] | None, now: float) -> bool:
        """`stored`: (salt, hash) of the token's name if that credential exists, unrevoked."""
        parts = split_token(token)
        secret = parts[1] if parts is not None else token[:128]
        salt, digest = stored if stored is not None else (self._dummy_salt, self._dummy_hash)
        ok = hmac.compare_digest(derive(secret, salt), digest) and stored is not None
        if ok and parts is not None:
            if len(self._recent) > 1024:
                self._recent.clear()
            self._recent[self._tag(token)] = (parts[0], now)
        return ok and parts is not None
