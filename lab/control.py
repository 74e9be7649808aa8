"""`cjb lab up|down|status|exec`: build the lab, run its processes, take it all away.

`up` registers cleanup for every exit path (exception, Ctrl-C, SIGTERM): whatever it
created is removed before it returns with an error. `down` works from the kernel's view
(namespace names, /proc/*/ns/net), not only from the state file, so it also cleans up
after a crash.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType

from cjb.common.netlink import apply, netns, netns_inode
from cjb.common.netlink.nsenter import remove_netns
from cjb.common.netlink.real import RealKernel
from cjb.lab import procs
from cjb.lab.configs import write_configs
from cjb.lab.state import LAB_ROOT, LabState, ProcessRecord, runs
from cjb.lab.topology import NS_PATTERN, LabNames, lab_spec, tenant_name

# program -> Debian package that provides it
REQUIRED_PROGRAMS = {"nft": "nftables", "curl": "curl"}
READY_TIMEOUT = 30.0
Log = Callable[[str], None]


class LabError(Exception):
    """The lab cannot do what was asked; the message says what to do instead."""


def check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, veth, nftables): run it as root")
    missing = {p: pkg for p, pkg in REQUIRED_PROGRAMS.items() if shutil.which(p) is None}
    if missing:
        pkgs = " ".join(sorted(set(missing.values())))
        raise LabError(
            f"missing programs: {', '.join(sorted(missing))}; install them with "
            f"`apt-get install -y --no-install-recommends {pkgs}`"
        )
    for path in ("/proc/sys/net/ipv6", "/run"):
        if not os.path.exists(path):
            raise LabError(f"{path} is missing: the lab needs IPv6 and a writable /run")


def cli_argv(*args: str) -> list[str]:
    """Run our own CLI with this interpreter (works from a venv without PATH set up)."""
    return [sys.executable, "-m", "cjb.cli", *args]


@contextmanager
def _term_as_exception() -> Iterator[None]:
    """SIGTERM/SIGHUP raise SystemExit, so the cleanup in `up` runs on those paths too."""

    me = os.getpid()

    def handler(signum: int, _frame: FrameType | None) -> None:
        if os.getpid() != me:  # a forked helper must never run our cleanup
            os._exit(128 + signum)
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _wait(what: str, ready: Callable[[], bool], timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.1)
    raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")


def _json_file(path: Path) -> dict[str, object] | None:
    import json

    try:
        data: dict[str, object] = json.loads(path.read_text())
        return data
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _gateway_ready(run_dir: Path, tenants: int) -> bool:
    status = _json_file(run_dir / "gateway" / "status.json")
    if status is None or not (run_dir / "tenants.json").exists():
        return False
    items = status.get("tenants")
    return (
        isinstance(items, dict)
        and len(items) == tenants
        and all(t.get("state") == "running" for t in items.values())
    )


def _appliance_ready(run_dir: Path, k: int) -> bool:
    status = _json_file(run_dir / f"appliance{k}" / "status.json")
    return bool(status and status.get("tunnel_on_bridge") and status.get("tunnel_up"))


def _appliance_check(run_dir: Path, k: int) -> Callable[[], bool]:
    return lambda: _appliance_ready(run_dir, k)


def _listening(ns: str, port: int) -> bool:
    with netns(ns):
        try:
            socket.create_connection(("::1", port), timeout=0.5).close()
            return True
        except OSError:
            return False


def _check_alive(state: LabState) -> None:
    for p in state.processes:
        if not procs.alive(p.pid):
            tail = ""
            with suppress(OSError):
                tail = Path(p.log).read_text()[-1500:]
            raise LabError(f"{p.node}: `{' '.join(p.argv)}` exited; its log {p.log}:\n{tail}")


def up(tenants: int = 3, same_mac: bool = False, log: Log = print) -> LabState:
    check_prerequisites()
    if not 1 <= tenants <= 200:
        raise LabError(f"--tenants {tenants}: choose 1..200")
    run_id = secrets.token_hex(2)
    names = LabNames(run_id)
    nodes = names.nodes(tenants)
    state = LabState(run_id, tenants, same_mac, {n: names.ns(n) for n in nodes})
    state.save()  # first, so that `down` finds the run even if we die right now
    with _term_as_exception():
        try:
            _build(state, names, log)
        except BaseException:
            log(f"lab up failed: removing run {run_id}")
            down(log=lambda _m: None, only=run_id)
            raise
    return state


def _build(state: LabState, names: LabNames, log: Log) -> None:
    run_dir = state.run_dir
    log(f"run {state.run_id}: {state.tenants} tenants, namespaces {names.prefix}*")
    with RealKernel() as kernel:
        apply(kernel, lab_spec(names, state.tenants, state.same_mac))
    configs = write_configs(names, state.tenants, run_dir)
    docroot = run_dir / "docroot"
    docroot.mkdir(exist_ok=True)

    def start(node: str, argv: list[str]) -> None:
        log_path = run_dir / "logs" / f"{node}.log"
        pid = procs.spawn(state.namespaces[node], argv, log_path)
        state.processes.append(ProcessRecord(node, pid, argv, str(log_path)))
        state.save()

    start("gateway", cli_argv("gateway", "run", "--config", str(configs["gateway"]), "-v"))
    for k in range(1, state.tenants + 1):
        node = f"appliance{k}"
        start(node, cli_argv("appliance", "run", "--config", str(configs[node]), "-v"))

    def gateway_ready() -> bool:
        _check_alive(state)
        return _gateway_ready(run_dir, state.tenants)

    _wait("the gateway to reconcile and start its workers", gateway_ready)
    start(
        "service",
        cli_argv(
            "service",
            "serve",
            "--directory",
            str(run_dir / "tenants.json"),
            "--port",
            "80",
            "--docroot",
            str(docroot),
        ),
    )
    for k in range(1, state.tenants + 1):
        _wait(f"appliance{k}'s tunnel on its bridge", _appliance_check(run_dir, k))

    def service_ready() -> bool:
        _check_alive(state)
        return _listening(state.namespaces["service"], 80)

    _wait("the service app to listen on port 80", service_ready)
    state.complete = True
    state.save()
    log(
        f"lab {state.run_id} is up; try `cjb lab demo` or `cjb lab exec site1 -- curl -s http://192.168.0.100/`"
    )


def lab_namespaces() -> set[str]:
    try:
        entries = os.listdir("/run/netns")
    except FileNotFoundError:
        return set()
    return {n for n in entries if re.match(NS_PATTERN, n)}


def down(log: Log = print, only: str | None = None) -> list[str]:
    """Remove every run (or run `only`): processes, namespaces (and so links, nft tables).

    Returns what remains (empty when clean)."""
    namespaces = lab_namespaces()
    states = runs()
    if only is not None:
        namespaces = {n for n in namespaces if n.startswith(LabNames(only).prefix)}
        states = [s for s in states if s.run_id == only]
    inodes = {i for i in (netns_inode(n) for n in namespaces) if i is not None}
    pids = {p.pid for s in states for p in s.processes if procs.alive(p.pid)}
    pids |= procs.pids_in_namespaces(inodes)
    if pids:
        log(f"stopping {len(pids)} processes")
    survivors = procs.kill_all(pids)
    for name in sorted(namespaces):
        try:
            remove_netns(name)
        except OSError as exc:
            log(f"cannot delete namespace {name}: {exc}")
    if namespaces:
        log(f"deleted {len(namespaces)} namespaces")
    for s in states:
        shutil.rmtree(s.run_dir, ignore_errors=True)
    if only is None and LAB_ROOT.is_dir():
        for leftover in LAB_ROOT.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)
    remaining = [
        f"namespace {n}" for n in sorted(lab_namespaces()) if only is None or n in namespaces
    ]
    remaining += [f"process {p}" for p in sorted(survivors | procs.pids_in_namespaces(inodes))]
    return remaining


def exec_in(state: LabState, node: str, argv: list[str]) -> None:
    """Replace this process with `argv` running in `node`'s namespace."""
    from cjb.common.netlink import enter

    ns = state.namespaces.get(node)
    if ns is None:
        known = ", ".join(sorted(state.namespaces))
        raise LabError(f"no node {node!r} in run {state.run_id}; nodes: {known}")
    enter(ns)
    os.execvp(argv[0], argv)  # noqa: S606 (the user's own command, by design)


def native_link_local(state: LabState, k: int) -> ipaddress.IPv6Address | None:
    """The service host's own link-local address on tenant K's native IPv6 link."""
    from cjb.gateway.dataplane.config import native_ifname

    ifname = native_ifname(tenant_name(k))
    with RealKernel() as kernel:
        try:
            addresses = kernel.addresses(state.namespaces["service"], ifname)
        except Exception:
            return None
    for a in addresses:
        if a.version == 6 and a.ip.is_link_local:
            return ipaddress.IPv6Address(a.ip)
    return None
