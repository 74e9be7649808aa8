"""What the discovery ALG did, counted by outcome.

The translator core keeps no ALG state of its own, so the counts live here, process-wide
(one gateway daemon process serves every tenant; per-tenant ALG counts would need the
Translator to own an `AlgCounters` and pass it to the hook — noted for the lead).
"""

from __future__ import annotations

from collections import Counter

ALG_COUNTERS: Counter[str] = Counter()


def count(outcome: str) -> None:
    ALG_COUNTERS[outcome] += 1


def snapshot() -> dict[str, int]:
    return dict(sorted(ALG_COUNTERS.items()))
