"""How a codec says "these bytes are not a valid header" without raising."""

from __future__ import annotations

import enum
from typing import NamedTuple


class Problem(enum.Enum):
    TRUNCATED = "truncated"
    MALFORMED = "malformed"
    BAD_CHECKSUM = "bad-checksum"


class Invalid(NamedTuple):
    """A parse result for bytes that are not a valid header; `detail` says which field."""

    problem: Problem
    detail: str


def truncated(what: str, need: int, have: int) -> Invalid:
    return Invalid(Problem.TRUNCATED, f"{what}: need {need} bytes, have {have}")


def malformed(detail: str) -> Invalid:
    return Invalid(Problem.MALFORMED, detail)
