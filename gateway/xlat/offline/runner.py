"""The offline loop: every record of a capture through one translator, in order."""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cjb.gateway.xlat import Direction, Side, Translator, XlatConfig, XlatCounters
from cjb.gateway.xlat.offline.framing import (
    ETHERTYPE_IPV6,
    from_ethernet,
    output_linktype,
    to_ethernet,
)
from cjb.gateway.xlat.offline.pcapio import CaptureError, CaptureReader, CaptureWriter, LinkType

PROGRESS_EVERY = 10_000
MAX_FAILURES_KEPT = 10

# The port a frame arrives on, per direction: emits on that side go back the way they came.
_ARRIVAL_SIDE = {Direction.TO_SERVICE: Side.LAN, Direction.TO_LAN: Side.SERVICE}


class DirectionMode(enum.Enum):
    AUTO = "auto"
    TO_SERVICE = "to-service"
    TO_LAN = "to-lan"


def choose_direction(frame: bytes, mode: DirectionMode) -> Direction:
    """The direction of one frame: fixed, or by EtherType under `auto`.

    Under `auto` only IPv6 goes to the LAN. IPv4, ARP and anything unknown or too short to
    tell go to the service side, where the core drops what it cannot use with a named
    reason, so every input frame still shows up in the counters.
    """
    if mode is DirectionMode.TO_SERVICE:
        return Direction.TO_SERVICE
    if mode is DirectionMode.TO_LAN:
        return Direction.TO_LAN
    if frame[12:14] == ETHERTYPE_IPV6.to_bytes(2, "big"):
        return Direction.TO_LAN
    return Direction.TO_SERVICE


@dataclass(frozen=True, slots=True)
class CoreFailure:
    """The core raised on one frame: a bug in the core, reported rather than hidden."""

    index: int  # 1-based record number in the input capture
    error: str


@dataclass
class OfflineSummary:
    input_linktype: LinkType
    output_linktype: LinkType
    counters: XlatCounters
    records_in: int = 0
    written_out: int = 0
    written_errors: int = 0  # only with errors_to
    unrepresentable: int = 0  # ARP emitted for a raw-IP capture
    core_failures: int = 0  # frames on which the core raised (its INTERNAL_ERROR drops)
    first_failures: list[CoreFailure] = field(default_factory=list)


def _check_distinct(src: Path, *outputs: Path | None) -> None:
    seen = {src.resolve()}
    for path in outputs:
        if path is None:
            continue
        if path.resolve() in seen:
            raise CaptureError(f"{path}: used twice; input and output files must differ")
        seen.add(path.resolve())


def translate_capture(
    src: Path,
    dst: Path,
    *,
    mode: DirectionMode = DirectionMode.AUTO,
    config: XlatConfig | None = None,
    errors_to: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> OfflineSummary:
    """Translate every record of `src` into `dst` (and `errors_to`), keeping timestamps.

    Emits on both sides go to `dst` in the order the core returns them, unless `errors_to`
    is given: then emits that leave on the side their frame arrived from (ICMP errors back
    to the sender) go there instead.
    """
    _check_distinct(src, dst, errors_to)
    translator = Translator(config)
    with contextlib.ExitStack() as stack:
        reader = stack.enter_context(CaptureReader(src))
        out_type = output_linktype(reader.linktype)
        out = stack.enter_context(CaptureWriter(dst, out_type, nano=reader.nano))
        errors = (
            stack.enter_context(CaptureWriter(errors_to, out_type, nano=reader.nano))
            if errors_to is not None
            else None
        )
        summary = OfflineSummary(reader.linktype, out_type, translator.counters)
        for record in reader:
            summary.records_in += 1
            frame = to_ethernet(record.data, reader.linktype)
            direction = choose_direction(frame, mode)
            result = translator.translate(frame, direction)
            if translator.errors.total != summary.core_failures:
                # The core caught an exception on this frame (an INTERNAL_ERROR drop): a
                # bug, reported with its type and message, and `cjb xlat` exits 3.
                summary.core_failures = translator.errors.total
                error = translator.errors.last()
                if error is not None and len(summary.first_failures) < MAX_FAILURES_KEPT:
                    text = f"{error.kind}: {error.message}" if error.message else error.kind
                    summary.first_failures.append(CoreFailure(summary.records_in, text))
            for emit in result.emits:
                data = from_ethernet(emit.frame, out_type)
                if data is None:
                    summary.unrepresentable += 1
                    continue
                if errors is not None and emit.side is _ARRIVAL_SIDE[direction]:
                    errors.write(record.sec, record.frac, data)
                else:
                    out.write(record.sec, record.frac, data)
            if progress is not None and summary.records_in % PROGRESS_EVERY == 0:
                progress(summary.records_in)
        summary.written_out = out.count
        summary.written_errors = errors.count if errors is not None else 0
    return summary
