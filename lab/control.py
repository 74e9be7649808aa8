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

from cjb.appliance.tunnel_wireguard import IFNAME_ENV
from cjb.common.netlink import apply, netns, netns_inode
from cjb.common.netlink.nsenter import remove_netns
from cjb.common.netlink.real import RealKernel
from cjb.lab import discovery as lab_discovery
from cjb.lab import enrolled as enrolled_lab
from cjb.lab import procs, readiness
from cjb.lab.configs import write_configs
from cjb.lab.state import LAB_ROOT, LabState, ProcessRecord, runs
from cjb.lab.topology import NS_PATTERN, WG_PREFIX, LabNames, lab_spec, tenant_name

# program -> Debian package that provides it
REQUIRED_PROGRAMS = {"nft": "nftables", "curl": "curl"}
READY_TIMEOUT = 30.0
TRANSPORTS = ("wireguard", "vxlan")
# "vxlan": the issue-3 path (static configs, plain VXLAN over the lab underlay), kept as a
# fallback; "wireguard": appliances enroll over HTTPS and tunnel VXLAN inside WireGuard.
DEFAULT_TRANSPORT = "wireguard"
WIREGUARD_SOCKET_DIR = Path("/var/run/wireguard")
Log = Callable[[str], None]


class LabError(Exception):
    """The lab cannot do what was asked; the message says what to do instead."""


def check_prerequisites(transport: str = "vxlan") -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, veth, nftables): run it as root")
    required = dict(REQUIRED_PROGRAMS)
    if transport == "wireguard" and not os.path.isdir("/sys/module/wireguard"):
        required["wireguard-go"] = "wireguard-go"
    missing = {p: pkg for p, pkg in required.items() if shutil.which(p) is None}
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


def _wait_all(what: str, missing: Callable[[], list[str]], timeout: float, state: LabState) -> None:
    """Wait until `missing()` is empty; on timeout, name what is still missing."""
    deadline = time.monotonic() + timeout
    next_alive_check = 0.0
    while True:
        if time.monotonic() >= next_alive_check:  # a /proc read per process: not every poll
            _check_alive(state)
            next_alive_check = time.monotonic() + 1.0
        left = missing()
        if not left:
            return
        if time.monotonic() >= deadline:
            raise LabError(
                f"timed out after {timeout:.0f}s waiting for {what}; {len(left)} not ready:\n"
                f"{readiness.describe(left)}\nlogs: {state.run_dir / 'logs'}"
            )
        time.sleep(0.2)


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


def up(
    tenants: int = 3, same_mac: bool = False, log: Log = print, transport: str = "vxlan"
) -> LabState:
    """Build and start a lab run. (`transport` defaults to the plain path here so that
    existing callers keep their lab; the CLI's default is DEFAULT_TRANSPORT.)"""
    if transport not in TRANSPORTS:
        raise LabError(f"--transport {transport!r}: choose one of {', '.join(TRANSPORTS)}")
    check_prerequisites(transport)
    if not 1 <= tenants <= 200:
        raise LabError(f"--tenants {tenants}: choose 1..200")
    run_id = _fresh_run_id()
    names = LabNames(run_id)
    nodes = names.nodes(tenants)
    state = LabState(
        run_id, tenants, same_mac, {n: names.ns(n) for n in nodes}, transport=transport
    )
    state.save()  # first, so that `down` finds the run even if we die right now
    with _term_as_exception():
        try:
            _build(state, names, log)
        except BaseException as exc:
            kept = _keep_wireguard_logs(state)
            log(f"lab up failed: removing run {run_id}")
            down(log=lambda _m: None, only=run_id)
            if kept and isinstance(exc, LabError):
                raise LabError(f"{exc}\n{kept}") from exc
            if kept:
                log(kept)
            raise
    return state


def _fresh_run_id() -> str:
    """A run id no state, namespace or wireguard-go socket on this machine carries yet: the
    WireGuard interface names derive from it and are machine-wide, and a second wireguard-go
    for a name already in use fails to start."""
    for _ in range(100):
        run_id = secrets.token_hex(2)
        in_use = (
            (LAB_ROOT / run_id).exists()
            or any(n.startswith(LabNames(run_id).prefix) for n in lab_namespaces())
            or bool(_wireguard_sockets(run_id))
        )
        if not in_use:
            return run_id
    raise LabError(f"no free lab run id: {LAB_ROOT} holds too many runs (`cjb lab down --all`)")


# A failed `up` removes its run directory; wireguard-go's own logs are copied here first.
FAILED_LOGS = LAB_ROOT.parent / f"{LAB_ROOT.name}-failed"


def _keep_wireguard_logs(state: LabState) -> str:
    """Copy every wireguard-go log of the run out of its directory (which `down` removes);
    returns where they went and their last lines, for the error message."""
    try:
        logs = sorted(p for p in state.run_dir.rglob("*wireguard*.log") if p.is_file())
    except OSError:
        return ""
    if not logs:
        return ""
    kept = FAILED_LOGS / state.run_id
    notes = []
    for path in logs:
        dest = kept / "_".join(path.relative_to(state.run_dir).parts)
        try:
            kept.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
            tail = path.read_text(errors="replace")[-600:].strip()
        except OSError as exc:
            notes.append(f"wireguard-go log {path}: could not keep it: {exc}")
            continue
        notes.append(f"wireguard-go log kept in {dest}:" + (f"\n{tail}" if tail else " (empty)"))
    return "\n".join(notes)


def _build(state: LabState, names: LabNames, log: Log) -> None:
    run_dir = state.run_dir
    log(f"run {state.run_id}: {state.tenants} tenants, namespaces {names.prefix}*")
    enrolled = state.transport == "wireguard"
    with RealKernel() as kernel:
        # Discovery needs the enrolled agent: its relay runs from the config.
        apply(kernel, lab_spec(names, state.tenants, state.same_mac, discovery=enrolled))
    if enrolled:
        log("initialising the gateway, personalising and importing the appliances")
        try:
            configs = enrolled_lab.write_configs(names, state.tenants, run_dir)
            # Before the agents start: the catalog comes with their enrollment.
            lab_discovery.set_catalogs(
                enrolled_lab.gateway_state_dir(run_dir), run_dir, state.tenants
            )
        except (enrolled_lab.EnrollSetupError, lab_discovery.DiscoverySetupError) as exc:
            raise LabError(str(exc)) from None
    else:
        configs = write_configs(names, state.tenants, run_dir)
    docroot = run_dir / "docroot"
    docroot.mkdir(exist_ok=True)
    if enrolled:
        lab_discovery.write_docroot(docroot, state.tenants)

    def start(node: str, argv: list[str], env: dict[str, str] | None = None, tag: str = "") -> None:
        # The state file is saved once per batch, not per process (it lists them all: a
        # save per spawn is O(N^2) at 100 tenants); `down` also finds our processes by
        # their namespace, so one that is not recorded yet is still cleaned up.
        log_path = run_dir / "logs" / f"{node}{tag}.log"
        pid = procs.spawn(state.namespaces[node], argv, log_path, env)
        state.processes.append(ProcessRecord(node, pid, argv, str(log_path)))

    if enrolled:
        state_dir = str(enrolled_lab.gateway_state_dir(run_dir))
        serve = cli_argv("gateway", "serve", "--state-dir", state_dir)
        start("gateway", enrolled_lab.api_argv(serve), tag="-api")
    start("gateway", cli_argv("gateway", "run", "--config", str(configs["gateway"]), "-v"))
    if enrolled:
        for k in range(1, state.tenants + 1):
            start(f"site{k}", lab_discovery.printer_argv(k), tag="-printer")
    state.save()
    log(f"starting {state.tenants} appliance agents")
    started, started_wall = time.monotonic(), time.time()
    for k in range(1, state.tenants + 1):
        node = f"appliance{k}"
        env = {IFNAME_ENV: names.wg_ifname(node)} if enrolled else None
        start(node, cli_argv("appliance", "run", "--config", str(configs[node]), "-v"), env)
    state.save()

    # Enrolled: tenants appear in the gateway as their appliances enroll. One deadline for
    # the gateway and the tunnels together, scaled by the number of appliances.
    timeout = readiness.enroll_timeout(state.tenants)
    deadline = time.monotonic() + timeout
    _wait_all(
        f"the gateway to run all {state.tenants} tenants",
        lambda: readiness.gateway_missing(run_dir, state.tenants),
        timeout,
        state,
    )
    if enrolled:
        times = enrolled_lab.enrollment_times(run_dir, started_wall)
        log(f"enrolled (seconds from agent start): {enrolled_lab.summary(times)}")
        took = time.monotonic() - started
        log(f"the gateway runs all {state.tenants} tenants {took:.1f}s after the agents started")
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
    state.save()
    _wait_all(
        f"all {state.tenants} appliances' tunnels to be up on their bridges",
        lambda: readiness.appliances_missing(run_dir, state.tenants),
        max(READY_TIMEOUT, deadline - time.monotonic()),
        state,
    )

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


def down(log: Log = print, *, only: str | None) -> list[str]:
    """Remove run `only`, or every run of anyone when `only` is None (`cjb lab down --all`):
    processes, namespaces (and so links, nft tables). `only` has no default: several
    engineers share a machine, so wiping every run is never the silent choice.

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
    # A process may start a helper (nft, ip) while it shuts down: sweep again.
    for _ in range(3):
        late = procs.pids_in_namespaces(inodes) - survivors
        if not late:
            break
        survivors |= procs.kill_all(late)
    for name in sorted(namespaces):
        try:
            remove_netns(name)
        except OSError as exc:
            log(f"cannot delete namespace {name}: {exc}")
    # wireguard-go removes its socket on SIGTERM; after a SIGKILL the file stays behind.
    for sock in _wireguard_sockets(only):
        with suppress(FileNotFoundError):
            sock.unlink()
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
    remaining += [f"wireguard socket {p}" for p in _wireguard_sockets(only)]
    return remaining


def _wireguard_sockets(only: str | None) -> list[Path]:
    run = only or "[0-9a-f][0-9a-f][0-9a-f][0-9a-f]"
    return sorted(WIREGUARD_SOCKET_DIR.glob(f"{WG_PREFIX}{run}[ga]*.sock"))


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
    """The service host's kernel-generated link-local address on tenant K's native IPv6
    link: the one besides fe80::<service IPv4>, which that link holds too."""
    from cjb.gateway.dataplane.config import native_ifname
    from cjb.lab.topology import SERVICE_LINK_LOCAL

    ifname = native_ifname(tenant_name(k))
    with RealKernel() as kernel:
        try:
            addresses = kernel.addresses(state.namespaces["service"], ifname)
        except Exception:
            return None
    for a in addresses:
        if a.version == 6 and a.ip.is_link_local and a.ip != SERVICE_LINK_LOCAL:
            return ipaddress.IPv6Address(a.ip)
    return None
