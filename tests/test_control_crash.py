"""`kill -9` of a real `cjb gateway serve` process in the middle of concurrent enrollments,
three times: every enrollment the client saw acknowledged is in the registry, nothing is
half-written (integrity_check, foreign keys, allocations complete and unique), and after the
restart the remaining devices enroll and earlier ones re-enroll to the same allocations."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from controlkit import Device

from cjb.common.control.protocol import SIGNATURE_HEADER
from cjb.gateway.control.registry import Registry
from cjb.gateway.control.statedir import StateDir, init_state_dir

DEVICES = 48
CONCURRENCY = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(layout: StateDir, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cjb.cli",
                "gateway",
                "serve",
                "--state-dir",
                str(layout.root),
                "--listen",
                "127.0.0.1",
                "--port",
                str(port),
                "--operator-port",  # ephemeral: tests run side by side on one host
                "0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"gateway did not listen on {port}: {log.read_text()}")


async def _enroll_all(
    url: str, ca: Path, devices: list[Device], acked: dict[str, tuple[int, str]], stop_after: int
) -> None:
    """Enroll (or re-enroll) devices with CONCURRENCY workers until `stop_after` successes or
    the connection dies. Records every acknowledged enrollment's (vni, overlay)."""
    import ssl

    ctx = ssl.create_default_context(cafile=str(ca))
    queue: asyncio.Queue[Device] = asyncio.Queue()
    for d in devices:
        queue.put_nowait(d)
    done = 0

    async def worker(s: aiohttp.ClientSession) -> None:
        nonlocal done
        while not queue.empty() and done < stop_after:
            d = queue.get_nowait()
            try:
                async with s.post(url + "/v1/enroll/nonce", ssl=ctx) as r:
                    nonce = (await r.json())["nonce"]
                body = d.body(nonce)
                async with s.post(
                    url + "/v1/enroll",
                    data=body,
                    ssl=ctx,
                    headers={SIGNATURE_HEADER: d.sign(body)},
                ) as r:
                    doc = await r.json()
                    assert r.status == 200, doc
                    tunnel = doc["config"]["tunnel"]
                    acked[d.serial] = (tunnel["vni"], tunnel["overlay_address"])
                    done += 1
            except (TimeoutError, aiohttp.ClientError, ConnectionError):
                return  # the server was killed under us

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        await asyncio.gather(*(worker(s) for _ in range(CONCURRENCY)))


async def _kill_mid_flight(
    url: str,
    layout: StateDir,
    pending: list[Device],
    acked: dict[str, tuple[int, str]],
    proc: subprocess.Popen[bytes],
    kill_at: int,
) -> None:
    """kill -9 as soon as `kill_at` enrollments are acknowledged, with others in flight."""
    task = asyncio.create_task(_enroll_all(url, layout.ca_cert, pending, acked, 10**6))
    while len(acked) < kill_at and not task.done():
        await asyncio.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    await task


def _consistent(layout: StateDir) -> dict[str, tuple[int, str]]:
    conn = sqlite3.connect(layout.registry)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.execute("PRAGMA foreign_keys=ON")
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        # Every enrolled device has its certificate, its enrollment row and a full allocation;
        # nothing else has any.
        rows = conn.execute(
            "SELECT d.serial, t.vni, t.overlay_address, "
            "(SELECT COUNT(*) FROM certificates c WHERE c.device = d.serial), "
            "(SELECT COUNT(*) FROM enrollments e WHERE e.device = d.serial) "
            "FROM devices d JOIN tenants t ON t.name = d.tenant WHERE d.state = 'enrolled'"
        ).fetchall()
        for serial, vni, overlay, certs, enrollments in rows:
            assert vni is not None and overlay is not None, serial
            assert certs >= 1 and certs == enrollments, serial
        orphans = conn.execute(
            "SELECT COUNT(*) FROM certificates c JOIN devices d ON d.serial = c.device "
            "WHERE d.state = 'inventory'"
        ).fetchone()[0]
        assert orphans == 0
        allocated = conn.execute(
            "SELECT vni, overlay_address FROM tenants WHERE vni IS NOT NULL"
        ).fetchall()
        assert len({a[0] for a in allocated}) == len({a[1] for a in allocated}) == len(allocated)
        return {s: (v, o) for s, v, o, _, _ in rows}
    finally:
        conn.close()


@pytest.mark.slow
def test_kill_9_mid_enrollment_keeps_registry_consistent(tmp_path: Path) -> None:
    layout = init_state_dir(tmp_path / "gw", ["127.0.0.1"], "192.0.2.1:51820")
    settings = layout.settings.read_text()
    settings = settings.replace(
        "nonce_requests_per_second = 2.0", "nonce_requests_per_second = 1000.0"
    )
    layout.settings.write_text(settings.replace("nonce_burst = 10", "nonce_burst = 1000"))
    devices = [Device(f"SN-{i:03d}") for i in range(DEVICES)]
    with Registry.open(layout.registry) as reg:
        reg.import_records(
            [(d.serial, d.factory_public, f"t{i}", "m") for i, d in enumerate(devices)]
        )
    log = tmp_path / "gateway.log"
    acked: dict[str, tuple[int, str]] = {}
    rounds: list[int] = []
    port = _free_port()
    url = f"https://127.0.0.1:{port}"

    for round_ in range(3):
        proc = _start(layout, port, log)
        try:
            pending = [d for d in devices if d.serial not in acked]
            asyncio.run(
                _kill_mid_flight(url, layout, pending, acked, proc, (round_ + 1) * DEVICES // 5)
            )
        finally:
            proc.kill()
            proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        rounds.append(len(acked))
        in_db = _consistent(layout)
        lost = {s for s in acked if s not in in_db}
        assert not lost, f"acknowledged enrollments lost by kill -9: {sorted(lost)}"
        for serial, alloc in acked.items():
            assert in_db[serial] == (alloc[0], alloc[1]), serial

    # Restart: the rest enroll, and earlier ones re-enroll to the same allocations.
    proc = _start(layout, port, log)
    try:
        before = dict(acked)
        acked.clear()
        asyncio.run(_enroll_all(url, layout.ca_cert, devices, acked, 10**6))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert len(acked) == DEVICES
    for serial, alloc in before.items():
        assert acked[serial] == alloc, f"{serial} moved after restart"
    final = _consistent(layout)
    assert sorted(v for v, _ in final.values()) == list(range(100, 100 + DEVICES))
    # The kills must have landed mid-way: some enrolled before, some left for after.
    assert rounds[0] > 0 and rounds[-1] < DEVICES, rounds
