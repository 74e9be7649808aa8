"""Enrollment rate and latency of the control plane: a real `cjb gateway serve` process on
127.0.0.1, real TLS, real SQLite (WAL, synchronous=FULL), N devices enrolling with C clients
at once, each doing nonce + enroll (Ed25519 proof, CSR, certificate issue, allocation).
Baseline in the same run: the nonce request alone (TLS + HTTP round trip, no crypto, no DB).

    python bench/control_enroll.py                   # 200 devices, 8 concurrent
    python bench/control_enroll.py --devices 1000 --concurrency 16

Numbers on a shared machine are noisy; compare the two lines of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from controlkit import Device

from cjb.common.control.protocol import SIGNATURE_HEADER
from cjb.gateway.control.registry import Registry
from cjb.gateway.control.statedir import init_state_dir


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _run(
    url: str, ctx: ssl.SSLContext, devices: list[Device], conc: int
) -> dict[str, list[float]]:
    queue: asyncio.Queue[Device] = asyncio.Queue()
    for d in devices:
        queue.put_nowait(d)
    times: dict[str, list[float]] = {"nonce": [], "enroll": []}

    async def worker(s: aiohttp.ClientSession) -> None:
        while not queue.empty():
            d = queue.get_nowait()
            t0 = time.perf_counter()
            async with s.post(url + "/v1/enroll/nonce", ssl=ctx) as r:
                nonce = (await r.json())["nonce"]
            body = d.body(nonce)  # client-side CSR and signature: not timed
            sig = d.sign(body)
            t1 = time.perf_counter()
            async with s.post(
                url + "/v1/enroll", data=body, ssl=ctx, headers={SIGNATURE_HEADER: sig}
            ) as r:
                assert r.status == 200, await r.text()
                await r.read()
            t2 = time.perf_counter()
            times["nonce"].append(t1 - t0)
            times["enroll"].append(t2 - t1)

    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(worker(s) for _ in range(conc)))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        layout = init_state_dir(Path(tmp) / "gw", ["127.0.0.1"], "192.0.2.1:51820")
        text = layout.settings.read_text().replace("second = 2.0", "second = 100000.0")
        text = text.replace("nonce_burst = 10", "nonce_burst = 100000")
        text = text.replace("enroll_requests_per_second = 10.0", "enroll_requests_per_second = 1e5")
        layout.settings.write_text(text.replace("enroll_burst = 100", "enroll_burst = 100000"))
        devices = [Device(f"B{i:05d}") for i in range(args.devices)]
        with Registry.open(layout.registry) as reg:
            reg.import_records(
                [(d.serial, d.factory_public, f"t{i}", "m") for i, d in enumerate(devices)]
            )
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "cjb.cli", "gateway", "serve", "--state-dir", str(layout.root),
             "--listen", "127.0.0.1", "--port", str(port), "--operator-port", "0"],
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            while not _listening(port):
                time.sleep(0.05)
            ctx = ssl.create_default_context(cafile=str(layout.ca_cert))
            t0 = time.perf_counter()
            times = asyncio.run(_run(f"https://127.0.0.1:{port}", ctx, devices, args.concurrency))
            wall = time.perf_counter() - t0
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
    print(f"{args.devices} devices, {args.concurrency} concurrent clients, {wall:.2f} s wall")
    print(f"{'step':8} {'median ms':>10} {'p95 ms':>8}")
    for step, xs in times.items():
        xs.sort()
        p95 = xs[int(0.95 * (len(xs) - 1))]
        print(f"{step:8} {statistics.median(xs) * 1e3:10.2f} {p95 * 1e3:8.2f}")
    rate = args.devices / wall
    print(f"enrollments/s (nonce + enroll, whole run, client crypto included): {rate:.0f}")


if __name__ == "__main__":
    main()
