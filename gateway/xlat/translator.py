"""Translator entry point (stub; being written)."""

from __future__ import annotations

from cjb.gateway.xlat.config import XlatConfig
from cjb.gateway.xlat.counters import XlatCounters
from cjb.gateway.xlat.result import Direction, XlatResult


class Translator:
    def __init__(self, config: XlatConfig | None = None) -> None:
        self.config = config or XlatConfig()
        self.counters = XlatCounters()

    def translate(self, frame: bytes, direction: Direction) -> XlatResult:
        raise NotImplementedError
