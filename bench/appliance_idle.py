"""CPU an idle enrolled appliance agent spends per second: the cheap drift check against the
full re-apply on every tick, measured in the same run.

For each mode it builds a 1-tenant enrolled lab (VXLAN inside WireGuard), waits until the
appliance's tunnel is up, then reads the agent process's utime+stime (/proc/PID/stat)
before and after `--seconds` of idling, and removes the lab. "full" sets
CJB_APPLIANCE_FULL_TICK=1 in the agents' environment (a full re-apply every tick, the old
behaviour); "cheap" is the default.

Reproduce (root, Debian packages wireguard-go nftables):
    python bench/appliance_idle.py --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from cjb.appliance.enrolled import FULL_TICK_ENV
from cjb.lab.control import down, up

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (proc(5) fields 14, 15)


def tunnel_up(status_file: Path) -> bool:
    try:
        return bool(json.loads(status_file.read_text()).get("tunnel_up"))
    except (FileNotFoundError, json.JSONDecodeError):
        return False


def measure(mode: str, seconds: float, settle: float) -> float:
    if mode == "full":
        os.environ[FULL_TICK_ENV] = "1"
    else:
        os.environ.pop(FULL_TICK_ENV, None)
    state = up(1, transport="wireguard", log=lambda _m: None)
    try:
        agent = next(p for p in state.processes if p.node == "appliance1" and "appliance" in p.argv)
        status = state.run_dir / "appliance1" / "status.json"
        deadline = time.monotonic() + 60
        while not tunnel_up(status):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{status}: tunnel not up after 60 s")
            time.sleep(0.5)
        time.sleep(settle)  # past enrollment's first heartbeats and the first full repairs
        before, t0 = cpu_seconds(agent.pid), time.monotonic()
        time.sleep(seconds)
        used, wall = cpu_seconds(agent.pid) - before, time.monotonic() - t0
    finally:
        os.environ.pop(FULL_TICK_ENV, None)
        down(lambda _m: None, only=state.run_id)
    return 1000 * used / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--settle", type=float, default=5.0)
    args = ap.parse_args()
    results = {mode: measure(mode, args.seconds, args.settle) for mode in ("full", "cheap")}
    print(f"idle enrolled appliance agent, {args.seconds:.0f} s each, ms CPU per idle second:")
    for mode, ms in results.items():
        print(f"  {mode:6} {ms:6.2f}")
    print(f"  cheap/full {results['cheap'] / results['full']:.3f}")


if __name__ == "__main__":
    main()
