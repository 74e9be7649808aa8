"""Exceptions the translator caught: kept with their type and message, not just counted.

The data path never raises (a frame that makes the core fail is an INTERNAL_ERROR drop),
but the cause must stay visible: the last few errors are kept in a bounded ring, with a
running total, for the worker's log, `cjb gateway status` and `cjb xlat`'s exit status.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from cjb.gateway.xlat.result import Direction

RING_SIZE = 16  # errors kept; older ones are only counted
FRAME_HEAD = 64  # bytes of the offending frame kept (headers, enough to rebuild the case)
MESSAGE_MAX = 200  # characters of the exception message kept


class TranslatorError(NamedTuple):
    """One exception raised inside `Translator.translate`."""

    number: int  # 1-based, counting every error this translator caught
    direction: Direction
    kind: str  # the exception's type name
    message: str
    frame_head: bytes

    def __str__(self) -> str:
        text = f"{self.kind}: {self.message}" if self.message else self.kind
        return f"{text} ({self.direction.value} frame {self.frame_head.hex()})"

    def as_dict(self) -> dict[str, object]:
        return {
            "number": self.number,
            "direction": self.direction.value,
            "type": self.kind,
            "message": self.message,
            "frame_head": self.frame_head.hex(),
        }


class RecentErrors:
    """A bounded ring of the last `RING_SIZE` errors plus the total ever caught."""

    def __init__(self, size: int = RING_SIZE) -> None:
        self._ring: deque[TranslatorError] = deque(maxlen=size)
        self.total = 0

    def record(self, exc: BaseException, direction: Direction, frame: bytes) -> TranslatorError:
        self.total += 1
        error = TranslatorError(
            self.total, direction, type(exc).__name__, str(exc)[:MESSAGE_MAX], frame[:FRAME_HEAD]
        )
        self._ring.append(error)
        return error

    def last(self) -> TranslatorError | None:
        return self._ring[-1] if self._ring else None

    def since(self, number: int) -> list[TranslatorError]:
        """The kept errors numbered above `number` (older ones may have left the ring)."""
        return [e for e in self._ring if e.number > number]

    def __len__(self) -> int:
        return len(self._ring)

    def as_list(self) -> list[dict[str, object]]:
        return [e.as_dict() for e in self._ring]
