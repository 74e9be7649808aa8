"""The offline run's summary, as a table for people and as JSON for scripts."""

from __future__ import annotations

from cjb.gateway.xlat import Direction, Side
from cjb.gateway.xlat.offline.runner import OfflineSummary


def summary_dict(summary: OfflineSummary) -> dict[str, object]:
    """A JSON-ready summary: the core's counters plus what the adapter wrote."""
    return {
        "input_linktype": int(summary.input_linktype),
        "output_linktype": int(summary.output_linktype),
        "records_in": summary.records_in,
        "written_out": summary.written_out,
        "written_errors": summary.written_errors,
        "unrepresentable": summary.unrepresentable,
        "core_failures": summary.core_failures,
        **summary.counters.as_dict(),
    }


def render_table(summary: OfflineSummary) -> str:
    """The summary as an aligned text table (frames in, frames out by side, drops)."""
    c = summary.counters
    rows: list[tuple[str, str, str]] = [("", "frames", "bytes")]
    rows.append(("read from IN", str(summary.records_in), ""))
    rows.append(("in", str(sum(c.frames_in.values())), str(sum(c.bytes_in.values()))))
    for direction in Direction:
        rows.append(
            (f"  {direction.value}", str(c.frames_in[direction]), str(c.bytes_in[direction]))
        )
    rows.append(("out", str(sum(c.frames_out.values())), str(sum(c.bytes_out.values()))))
    for side in Side:
        rows.append((f"  {side.value} side", str(c.frames_out[side]), str(c.bytes_out[side])))
    rows.append(("dropped", str(c.total_drops()), ""))
    for reason, count in sorted(c.drops.items(), key=lambda item: (-item[1], item[0].value)):
        if count:
            rows.append((f"  {reason.value}", str(count), ""))
    rows.append(("written to OUT", str(summary.written_out), ""))
    if summary.written_errors:
        rows.append(("written to --errors-to", str(summary.written_errors), ""))
    if summary.unrepresentable:
        rows.append(("not representable (ARP in raw IP)", str(summary.unrepresentable), ""))
    if summary.core_failures:
        rows.append(("translator raised", str(summary.core_failures), ""))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        f"{label:<{widths[0]}}  {frames:>{widths[1]}}  {size:>{widths[2]}}".rstrip()
        for label, frames, size in rows
    ]
    return "\n".join(lines)
