"""The malformed-frame corpus (test_xlat_malformed_corpus.py) through the vnet translator,
each frame under vnet headers that claim a partial checksum or a GSO super-frame.

What reaches gso.py from the tunnel is attacker-shaped (LAN frames, merged by GRO), so
every (header, frame) pair must end as frames out or a named drop, never an exception,
and never the reference translator's INTERNAL_ERROR.
"""

from __future__ import annotations

import random

from test_xlat_malformed_corpus import build_corpus

from cjb.gateway.xlat import Direction, DropReason, Translator, XlatConfig
from cjb.gateway.xlat.gso import (
    F_NEEDS_CSUM,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP_L4,
    NO_VNET,
    VNET,
    VnetTranslator,
)

HEADERS = [
    NO_VNET,
    VNET.pack(F_NEEDS_CSUM, GSO_NONE, 0, 0, 34, 16),  # partial TCP over IPv4
    VNET.pack(F_NEEDS_CSUM, GSO_NONE, 0, 0, 54, 6),  # partial UDP over IPv6
    VNET.pack(F_NEEDS_CSUM, GSO_TCPV4, 54, 100, 34, 16),
    VNET.pack(F_NEEDS_CSUM, GSO_TCPV6, 74, 7, 54, 16),
    VNET.pack(F_NEEDS_CSUM, GSO_UDP_L4, 42, 33, 34, 6),
    VNET.pack(F_NEEDS_CSUM, GSO_TCPV4, 54, 1, 14, 0),  # offsets into the Ethernet header
]


def test_corpus_under_vnet_headers_is_accounted_for() -> None:
    rng = random.Random(7)  # noqa: S311 - a reproducible sample, not a secret
    xl = VnetTranslator(Translator(XlatConfig()))
    corpus = build_corpus()
    unaccounted = 0
    for frame in corpus:
        for direction in Direction:
            for header in rng.sample(HEADERS, 2):
                result = xl.translate(header, frame, direction)
                if not result.emits and result.drop is None:
                    unaccounted += 1
    assert unaccounted == 0
    assert xl.reference.counters.drops[DropReason.INTERNAL_ERROR] == 0
    assert len(corpus) > 10_000
