"""Structured log lines: one JSON object per line, fields bounded (peer data is untrusted)."""

from __future__ import annotations

import json
import logging

MAX_FIELD = 256

ACCESS = logging.getLogger("cjb.service.access")
EVENTS = logging.getLogger("cjb.service")


def _bound(value: object) -> object:
    if isinstance(value, str) and len(value) > MAX_FIELD:
        return value[:MAX_FIELD] + "…"
    return value


def line(event: str, **fields: object) -> str:
    record = {"event": event, **{k: _bound(v) for k, v in fields.items()}}
    return json.dumps(record, ensure_ascii=True, separators=(",", ":"), default=str)


def log(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: object) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, "%s", line(event, **fields))
