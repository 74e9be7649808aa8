"""The Internet checksum (RFC 1071) and its incremental update (RFC 1624).

The one's complement sum of 16-bit words equals the buffer read as one big-endian
integer modulo 0xFFFF (because 0x10000 == 1 mod 0xFFFF); CPython's big integers make
that the fastest pure-Python way to sum a buffer.
"""

from __future__ import annotations

_MOD = 0xFFFF


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """One's complement sum of `data` as 16-bit words, folded into 0..0xFFFE.

    Odd-length data is padded with a zero byte at the end (RFC 1071 §4.1).
    """
    n = int.from_bytes(data, "big")
    if len(data) & 1:
        n <<= 8
    return n % _MOD


def finish(total: int) -> int:
    """Turn a (possibly unfolded) one's complement sum into the checksum field value."""
    return _MOD - (total % _MOD)


def internet_checksum(data: bytes | bytearray | memoryview) -> int:
    """The checksum field value for `data` whose checksum field is zero (RFC 1071).

    The result is in 0x0001..0xFFFF: a sum that folds to zero yields 0xFFFF, the
    form a UDP sender must transmit instead of 0 (RFC 768, RFC 8200 §8.1).
    """
    return finish(ones_sum(data))


def verify(data: bytes | bytearray | memoryview, extra: int = 0) -> bool:
    """True when `data` (checksum field included) plus `extra` (e.g. a pseudo-header sum)
    sums to zero in one's complement arithmetic."""
    return (ones_sum(data) + extra) % _MOD == 0


def adjust(checksum: int, removed: int, added: int) -> int:
    """RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), for sums of removed and added words.

    A correct checksum stays correct and an incorrect one stays incorrect by the same
    amount, so a translator never launders a corrupt packet into a valid one.
    `removed` and `added` are one's complement sums (see `ones_sum`).
    """
    total = (_MOD - checksum) + (_MOD - removed % _MOD) + added
    folded = total % _MOD
    return _MOD - folded if folded else 0


def adjust_udp(checksum: int, removed: int, added: int) -> int:
    """`adjust` for UDP, where 0 means "no checksum" and is sent as 0xFFFF (RFC 768)."""
    return adjust(checksum, removed, added) or 0xFFFF


def pseudo_header_sum_v4(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """Sum of the IPv4 pseudo-header (RFC 793 §3.1, RFC 768)."""
    return (ones_sum(src + dst) + proto + length) % _MOD


def pseudo_header_sum_v6(src: bytes, dst: bytes, next_header: int, length: int) -> int:
    """Sum of the IPv6 pseudo-header (RFC 8200 §8.1); length is the upper-layer length."""
    return (ones_sum(src + dst) + next_header + (length >> 16) + (length & 0xFFFF)) % _MOD
