"""Throughput of the translator core, next to a copy-only baseline from the same run.

Reproduce (from the repository root, after `pip install -e '.[dev]'`):

    python bench/xlat_core.py                     # the table, about 20 s
    python bench/xlat_core.py --duration 1        # steadier figures, slower
    python bench/xlat_core.py --profile udp-512-to-service   # where the time goes

Each case is one protocol (TCP, UDP), one size and one direction. The size is the IPv4
packet on the LAN side (64, 512, 1500 bytes: the smallest, a middle and a full-MTU packet);
the to-lan frames are the same packets in their IPv6 form, 20 bytes longer. Only the core
is timed: frames are built beforehand (with scapy) and results are discarded, no pcap IO.
Every frame is checked once before timing to be translated (not dropped), so a fast drop
path cannot pass for a fast translation.

The baseline is the least a translator that copies the frame must do in Python: a call
that slices the frame and joins a new header to the payload. The ratio column says how many
times slower the core is than that; frames/s is per core (single thread).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from cjb.gateway.xlat import Direction, Translator, XlatConfig

SIZES = (64, 512, 1500)
PROTOCOLS = ("tcp", "udp")
FRAMES_PER_CASE = 256  # distinct frames, cycled, so no case measures one cached object
TARGET_FPS = 200_000  # the common TCP/UDP path, per core

CLIENT_MAC, SERVICE_MAC = "3c:22:fb:00:00:0a", "02:cb:00:00:00:64"
CLIENT_V4, SERVICE_V4 = "192.168.0.10", "192.168.0.100"
CLIENT_V6, SERVICE_V6 = "fe80::c0a8:a", "fe80::c0a8:64"

Translate = Callable[[bytes, Direction], object]


@dataclass(frozen=True, slots=True)
class Case:
    protocol: str
    size: int
    direction: Direction

    @property
    def name(self) -> str:
        return f"{self.protocol}-{self.size}-{self.direction.value}"


def _l4(protocol: str, i: int, payload_len: int) -> Packet:
    sport = 40000 + i
    if protocol == "tcp":
        return TCP(sport=sport, dport=80, flags="PA", seq=1000 * i, ack=1) / (b"x" * payload_len)
    return UDP(sport=sport, dport=5000) / (b"x" * payload_len)


def build_frames(case: Case) -> list[bytes]:
    """FRAMES_PER_CASE frames of one case, checksums valid (scapy computes them)."""
    l4_header = 20 if case.protocol == "tcp" else 8
    payload_len = case.size - 20 - l4_header
    frames = []
    for i in range(FRAMES_PER_CASE):
        l4 = _l4(case.protocol, i, payload_len)
        if case.direction is Direction.TO_SERVICE:
            pkt = (
                Ether(src=CLIENT_MAC, dst=SERVICE_MAC)
                / IP(src=CLIENT_V4, dst=SERVICE_V4, id=i, flags="DF")
                / l4
            )
        else:
            pkt = (
                Ether(src=SERVICE_MAC, dst=CLIENT_MAC)
                / IPv6(src=SERVICE_V6, dst=CLIENT_V6, hlim=64)
                / l4
            )
        frames.append(bytes(pkt))
    return frames


def copy_only(frame: bytes, direction: Direction) -> bytes:
    """The baseline: one call, a header sliced off and a new one joined to the payload."""
    view = memoryview(frame)
    return b"".join((view[:12], b"\x86\xdd", view[14:]))


def check(translator: Translator, case: Case, frames: list[bytes]) -> str:
    """'ok', or why the core does not translate this case (then its figure means little)."""
    try:
        result = translator.translate(frames[0], case.direction)
    except Exception as exc:  # report and go on: a benchmark is not the place to crash
        return f"raised {type(exc).__name__}"
    if result.drop is not None:
        return f"drop: {result.drop.value}"
    if len(result.emits) != 1:
        return f"{len(result.emits)} emits"
    return "ok"


def per_frame_ns(
    fn: Translate, frames: list[bytes], direction: Direction, duration: float
) -> float:
    """Best of 3 rounds of at least `duration` seconds each: ns per frame."""
    best = float("inf")
    for _ in range(3):
        count = 0
        start = time.perf_counter_ns()
        deadline = start + int(duration * 1e9)
        now = start
        while now < deadline:
            for frame in frames:
                fn(frame, direction)
            count += len(frames)
            now = time.perf_counter_ns()
        best = min(best, (now - start) / count)
    return best


def cases() -> list[Case]:
    return [Case(p, s, d) for d in Direction for p in PROTOCOLS for s in SIZES]


def run_table(duration: float) -> int:
    translator = Translator(XlatConfig())
    header = (
        f"{'case':<22} {'core µs':>8} {'core f/s':>10} {'copy µs':>8} {'copy f/s':>11}"
        f" {'ratio':>6}  status"
    )
    print(
        f"translator core vs copy-only baseline, {sys.implementation.name} {sys.version.split()[0]}"
    )
    print(header)
    print("-" * len(header))
    worst_fps = float("inf")
    for case in cases():
        frames = build_frames(case)
        status = check(translator, case, frames)
        base_ns = per_frame_ns(copy_only, frames, case.direction, duration)
        if status.startswith("raised"):
            print(
                f"{case.name:<22} {'-':>8} {'-':>10} {base_ns / 1e3:>8.3f} {1e9 / base_ns:>11,.0f}"
                f" {'-':>6}  {status}"
            )
            continue
        core_ns = per_frame_ns(translator.translate, frames, case.direction, duration)
        worst_fps = min(worst_fps, 1e9 / core_ns)
        print(
            f"{case.name:<22} {core_ns / 1e3:>8.3f} {1e9 / core_ns:>10,.0f}"
            f" {base_ns / 1e3:>8.3f} {1e9 / base_ns:>11,.0f} {core_ns / base_ns:>6.1f}  {status}"
        )
    if worst_fps != float("inf"):
        verdict = "meets" if worst_fps >= TARGET_FPS else "misses"
        print(f"slowest case: {worst_fps:,.0f} frames/s ({verdict} the {TARGET_FPS:,} target)")
    return 0


def run_profile(name: str, frames_to_run: int, top: int) -> int:
    by_name = {case.name: case for case in cases()}
    case = by_name.get(name)
    if case is None:
        print(f"unknown case {name!r}; one of: {', '.join(by_name)}", file=sys.stderr)
        return 2
    translator = Translator(XlatConfig())
    frames = build_frames(case)
    status = check(translator, case, frames)
    if status.startswith("raised"):
        print(f"{name}: the core {status}; nothing to profile", file=sys.stderr)
        return 1
    translate, direction = translator.translate, case.direction
    rounds = max(1, frames_to_run // len(frames))
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(rounds):
        for frame in frames:
            translate(frame, direction)
    profiler.disable()
    print(f"{name} ({status}): {rounds * len(frames)} frames under cProfile")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--duration", type=float, default=0.2, help="seconds per timing round (3 rounds, best kept)"
    )
    parser.add_argument("--profile", metavar="CASE", help="profile one case, e.g. tcp-1500-to-lan")
    parser.add_argument("--frames", type=int, default=100_000, help="frames to run under --profile")
    parser.add_argument("--top", type=int, default=25, help="functions to list under --profile")
    args = parser.parse_args(argv)
    if args.profile:
        return run_profile(args.profile, args.frames, args.top)
    return run_table(args.duration)


if __name__ == "__main__":
    sys.exit(main())
