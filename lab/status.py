"""`cjb lab status`: nodes, namespaces and the processes running in them."""

from __future__ import annotations

from cjb.lab import procs
from cjb.lab.control import lab_namespaces
from cjb.lab.state import runs
from cjb.lab.topology import PREFIX


def render() -> str:
    lines = []
    all_runs = runs()
    known = set()
    for state in all_runs:
        flag = "up" if state.complete else f"INCOMPLETE (run `cjb lab down {state.run_id}`)"
        lines.append(
            f"run {state.run_id}: {state.tenants} tenants"
            f"{', same MACs' if state.same_mac else ''}, transport {state.transport} "
            f"[{flag}]  dir {state.run_dir}"
        )
        lines.append(f"  {'node':12} {'namespace':28} processes")
        present = lab_namespaces()
        for node, ns in state.namespaces.items():
            known.add(ns)
            running = [
                f"{p.pid}{'' if procs.alive(p.pid) else ' (dead)'} {_what(p.argv)}"
                for p in state.processes
                if p.node == node
            ]
            mark = "" if ns in present else " (missing)"
            lines.append(f"  {node:12} {ns + mark:28} {'; '.join(running) or '-'}")
        lines.append("")
    strays = sorted(lab_namespaces() - known)
    if strays:
        stray_runs = sorted({n.removeprefix(PREFIX).split("-", 1)[0] for n in strays})
        fix = ", ".join(f"`cjb lab down {r}`" for r in stray_runs)
        lines.append(f"namespaces of no recorded run (remove with {fix}): " + ", ".join(strays))
    if not lines:
        lines.append("no lab run (start one with `cjb lab up`)")
    return "\n".join(lines) + "\n"


def _what(argv: list[str]) -> str:
    """The two words after `-m cjb.cli` (a setpriv prefix may come first), e.g. "gateway serve"."""
    at = argv.index("cjb.cli") + 1 if "cjb.cli" in argv else 3
    return " ".join(argv[at : at + 2])
