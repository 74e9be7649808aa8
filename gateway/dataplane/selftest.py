"""`cjb gateway selftest`: the shipped RFC vectors (gateway/xlat/vectors.py) against the
installed translator, on both paths, as a pass/fail table.

The Python path is the translator the gateway's workers run. The kernel path is the
installed BPF object, loaded and attached exactly as the gateway attaches it, on a veth
pair in a scratch namespace this command creates (named cjbst<random>-x, removed on every
exit path, SIGTERM included):

    lan0 <--veth--> tun [tc ingress: cjb_tunnel_in ] --redirect--> svc <--veth--> svc0
                    svc [tc ingress: cjb_service_in] --redirect--> tun

A vector goes in at lan0 or svc0. Translated on the far side: compared byte for byte.
Seen untouched on the port's worker socket (which carries the gateway's skip filter): the
fast path left it to the Python path ("slow path"), which is right for anything but the
common case (`Vector.fast`). Where the kernel path cannot run (not root, no BPF object, no
libbpf), its column says why and only the Python results decide the exit code.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

from cjb.gateway.xlat import Translator
from cjb.gateway.xlat.result import Direction, Side
from cjb.gateway.xlat.vectors import CONFIG, VECTORS, Vector

if TYPE_CHECKING:
    from cjb.common.netlink import Kernel, NetworkSpec, TcBpf
    from cjb.gateway.dataplane.bpf import FastPath

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
WAIT_SECONDS = 1.0  # per vector, for the frame to come out somewhere
QUIET_SECONDS = 0.05  # after it did: a second frame would show here


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    text: str  # "pass", "slow path", or what went wrong


@dataclass(frozen=True, slots=True)
class Row:
    vector: Vector
    python: Outcome
    kernel: Outcome | None  # None: the kernel path did not run (see Report.kernel_note)


@dataclass(frozen=True, slots=True)
class Report:
    rows: tuple[Row, ...]
    kernel_note: str  # why the kernel column is empty, or ""

    @property
    def ok(self) -> bool:
        return all(r.python.ok and (r.kernel is None or r.kernel.ok) for r in self.rows)


def _describe(frames: tuple[tuple[Side, bytes], ...]) -> str:
    return ", ".join(f"{len(f)} B to {side.value}" for side, f in frames) or "nothing"


def _first_difference(got: bytes, want: bytes) -> str:
    at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
    if at is None:
        return f"{len(got)} B, expected {len(want)} B"
    return f"differs at byte {at}: {got[at]:#04x}, expected {want[at]:#04x}"


def run_python(v: Vector) -> Outcome:
    translator = Translator(CONFIG)
    result = translator.translate(v.frame, v.direction)
    got = tuple((e.side, e.frame) for e in result.emits)
    if v.expected_drop is not None:
        if result.drop is v.expected_drop and not got:
            return Outcome(True, "pass")
        what = result.drop.value if result.drop else _describe(got)
        return Outcome(False, f"FAIL: {what}, expected drop {v.expected_drop.value}")
    if got == v.expected_frames:
        return Outcome(True, "pass")
    if result.drop is not None:
        error = translator.errors.last()
        detail = f" ({error.kind}: {error.message})" if error else ""
        return Outcome(False, f"FAIL: dropped {result.drop.value}{detail}")
    if len(got) == len(v.expected_frames) == 1:
        return Outcome(False, f"FAIL: {_first_difference(got[0][1], v.expected_frames[0][1])}")
    return Outcome(False, f"FAIL: {_describe(got)}, expected {_describe(v.expected_frames)}")


# ------------------------------------------------------------------------- kernel path


class KernelUnavailable(Exception):
    """The kernel path cannot run here; the message says why."""


def _packet_socket(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((ifname, ETH_P_ALL))
    sock.setblocking(False)
    return sock


def read_incoming(sock: socket.socket) -> list[bytes]:
    """Every frame waiting on `sock` now, except our own outgoing ones."""
    frames: list[bytes] = []
    while True:
        try:
            data, addr = sock.recvfrom(65535)
        except BlockingIOError:
            return frames
        if addr[2] != PACKET_OUTGOING:
            frames.append(data)


def scratch_spec(owner: str, ns: str, prefix: str, tc: dict[str, TcBpf]) -> NetworkSpec:
    """One owned namespace `ns` with two veth pairs: lan0<->tun (the tunnel port) and
    svc<->svc0 (the service link), tc programs from `tc` on the named ingresses."""
    from cjb.common.netlink import Link, Namespace, NetworkSpec, Veth, VethPeer

    no_v6 = (("ipv6.disable_ipv6", "1"),)  # no router solicitations, MLD: no stray frames

    def link(name: str, kind: Veth | VethPeer) -> Link:
        return Link(name, kind, mtu=9000, sysctls=no_v6, tc_ingress=tc.get(name))

    links = (
        link("lan0", Veth(peer="tun")),
        link("tun", VethPeer(of="lan0")),
        link("svc", Veth(peer="svc0")),
        link("svc0", VethPeer(of="svc")),
    )
    return NetworkSpec(owner, (Namespace(ns, links, owned=True),), namespace_prefix=prefix)


@dataclass
class _Bed:
    lan0: socket.socket
    svc0: socket.socket
    worker_tun: socket.socket
    worker_svc: socket.socket

    def run(self, v: Vector) -> Outcome:
        if v.direction is Direction.TO_SERVICE:
            inject, far, worker, far_side = self.lan0, self.svc0, self.worker_tun, Side.SERVICE
        else:
            inject, far, worker, far_side = self.svc0, self.lan0, self.worker_svc, Side.LAN
        for s in (far, worker):
            read_incoming(s)
        inject.send(v.frame)
        got_far: list[bytes] = []
        got_worker: list[bytes] = []
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            done = bool(got_far or got_worker)
            wait = QUIET_SECONDS if done else deadline - time.monotonic()
            if wait <= 0:
                break
            ready, _, _ = select.select([far, worker], [], [], wait)
            if not ready and done:
                break
            got_far += read_incoming(far) if far in ready else []
            got_worker += read_incoming(worker) if worker in ready else []
        if got_far:
            if v.expected_drop is not None:
                return Outcome(False, f"FAIL: translated; expected drop {v.expected_drop.value}")
            want = [f for side, f in v.expected_frames if side is far_side]
            if got_far == want:
                return Outcome(True, "pass")
            if len(got_far) == len(want) == 1:
                return Outcome(False, f"FAIL: {_first_difference(got_far[0], want[0])}")
            return Outcome(False, f"FAIL: {len(got_far)} frames out, expected {len(want)}")
        if got_worker == [v.frame]:
            if v.fast:
                return Outcome(False, "FAIL: left a common-case frame to the slow path")
            return Outcome(True, "slow path")
        if got_worker:
            return Outcome(False, "FAIL: the slow path got a changed frame")
        return Outcome(False, "FAIL: the frame was lost")


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the namespace is removed on that exit path too."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def kernel_bed(prefix: str | None = None) -> Iterator[_Bed]:
    """The installed fast path on a scratch namespace; raises KernelUnavailable."""
    if os.geteuid() != 0:
        raise KernelUnavailable("needs root (a scratch network namespace and tc BPF)")
    from cjb.common.netlink import NetlinkError
    from cjb.common.netlink import remove as remove_spec
    from cjb.common.netlink.real import RealKernel
    from cjb.common.vxlan_guard.libbpf import LibbpfError
    from cjb.gateway.dataplane.bpf import FastPath, FastPathError

    try:
        fp = FastPath(first_ipv4_id=0)
    except (FastPathError, LibbpfError) as exc:
        raise KernelUnavailable(str(exc)) from None
    prefix = prefix or f"cjbst{secrets.token_hex(3)}-"
    ns = prefix + "x"

    def spec(tc: dict[str, TcBpf]) -> NetworkSpec:
        return scratch_spec("selftest", ns, prefix, tc)

    socks: list[socket.socket] = []
    with _sigterm_as_exit(), RealKernel() as kernel:
        try:
            try:
                _set_up(kernel, spec, ns, fp, socks)
            except (NetlinkError, OSError) as exc:
                raise KernelUnavailable(
                    f"cannot set up the scratch namespace {ns}: {exc}"
                ) from None
            yield _Bed(*socks)
        finally:
            for s in socks:
                s.close()
            remove_spec(kernel, spec({}))
            fp.close()


def _set_up(
    kernel: Kernel,
    spec: Callable[[dict[str, TcBpf]], NetworkSpec],
    ns: str,
    fp: FastPath,
    socks: list[socket.socket],
) -> None:
    """The namespace, the veths, the programs attached and the worker sockets filtered, as
    the gateway does it; `socks` receives lan0, svc0, tun, svc (closed by the caller)."""
    from cjb.common.netlink import TcBpf, apply, netns
    from cjb.gateway.dataplane.bpf import FastPathConfig

    apply(kernel, spec({}))
    with netns(ns):
        tun, svc = socket.if_nametoindex("tun"), socket.if_nametoindex("svc")
    fp.configure(FastPathConfig(tun, svc, 0, CONFIG.lan_mtu, CONFIG.service_mtu))
    apply(
        kernel,
        spec(
            {
                "tun": TcBpf(
                    fp.program_fd("tunnel"),
                    fp.program_id("tunnel"),
                    fp.program_name("tunnel"),
                ),
                "svc": TcBpf(
                    fp.program_fd("service"),
                    fp.program_id("service"),
                    fp.program_name("service"),
                ),
            }
        ),
    )
    with netns(ns):
        socks += [_packet_socket(n) for n in ("lan0", "svc0", "tun", "svc")]
    fp.attach_skip_filter(socks[2], "tunnel")
    fp.attach_skip_filter(socks[3], "service")


def run_selftest(
    kernel: bool = True, bed: Callable[[], contextlib.AbstractContextManager[_Bed]] = kernel_bed
) -> Report:
    python = [run_python(v) for v in VECTORS]
    if not kernel:
        rows = tuple(Row(v, p, None) for v, p in zip(VECTORS, python, strict=True))
        return Report(rows, "--python-only")
    try:
        with bed() as b:
            kernel_rows = [b.run(v) for v in VECTORS]
    except KernelUnavailable as exc:
        rows = tuple(Row(v, p, None) for v, p in zip(VECTORS, python, strict=True))
        return Report(rows, str(exc))
    rows = tuple(Row(v, p, k) for v, p, k in zip(VECTORS, python, kernel_rows, strict=True))
    return Report(rows, "")


def render(report: Report) -> str:
    headers = ("vector", "RFC", "python", "kernel")
    cells = [
        (
            r.vector.name,
            r.vector.rfc,
            r.python.text,
            r.kernel.text if r.kernel is not None else "n/a",
        )
        for r in report.rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    failed = sum(not r.python.ok or (r.kernel is not None and not r.kernel.ok) for r in report.rows)
    if report.kernel_note:
        lines.append(f"kernel path not run: {report.kernel_note}")
    lines.append(
        f"{len(report.rows)} vectors: {'all passed' if not failed else f'{failed} FAILED'}"
    )
    return "\n".join(lines)
