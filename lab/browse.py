"""Browse mDNS from inside a lab namespace, as a LAN client or as the service host does.

python-zeroconf opens its sockets and threads in the namespace it starts in, so each
browse runs as its own process (`python -m cjb.lab.browse lan|service …`), started in the
namespace and printing JSON; `start`/`finish` let the demo run one per tenant in parallel.

  lan:      a LAN client on `--address` (IPv4 only) browses `--type`, resolves each
            instance: [{"name", "addresses", "port"}]
  service:  cjb.service.discovery.browse on `--ifname` (the tenant's service link):
            [{"name", "addresses" (fe80::…%ifname), "port"}]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass

from cjb.common.netlink import netns


@dataclass(frozen=True)
class Found:
    name: str
    addresses: tuple[str, ...]
    port: int


@dataclass
class Pending:
    proc: subprocess.Popen[str]
    what: str


def start(ns: str, *args: str) -> Pending:
    argv = [sys.executable, "-m", "cjb.lab.browse", *args]
    with netns(ns):
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return Pending(proc, f"browse {' '.join(args)} in {ns}")


def finish(p: Pending, timeout: float = 30.0) -> list[Found] | str:
    """The services found, or why the browse failed (a message, never an exception)."""
    try:
        out, err = p.proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.proc.kill()
        p.proc.communicate()
        return f"{p.what}: no answer in {timeout:.0f}s"
    if p.proc.returncode != 0:
        return f"{p.what}: exit {p.proc.returncode}: {err.strip()[-200:]}"
    try:
        return [Found(d["name"], tuple(d["addresses"]), int(d["port"])) for d in json.loads(out)]
    except (ValueError, KeyError, TypeError) as exc:
        return f"{p.what}: unreadable output ({exc}): {out[:120]!r}"


def _browse_lan(address: str, service_type: str, timeout: float) -> list[dict[str, object]]:
    from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

    full = f"{service_type}.local."
    names: set[str] = set()

    def on_change(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is not ServiceStateChange.Removed:
            names.add(name)

    zc = Zeroconf(interfaces=[address], ip_version=IPVersion.V4Only)
    try:
        browser = ServiceBrowser(zc, full, handlers=[on_change])
        time.sleep(timeout)
        browser.cancel()
        out: list[dict[str, object]] = []
        for name in sorted(names):
            info = ServiceInfo(full, name)
            if info.request(zc, 2000):
                out.append({"name": name, "addresses": info.parsed_addresses(), "port": info.port})
        return out
    finally:
        zc.close()


def _browse_service(ifname: str, service_type: str, timeout: float) -> list[dict[str, object]]:
    from cjb.service.discovery import browse

    return [
        {"name": s.name, "addresses": list(s.addresses), "port": s.port}
        for s in browse(ifname, [service_type], timeout=timeout)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cjb.lab.browse")
    sub = parser.add_subparsers(dest="side", required=True)
    lan = sub.add_parser("lan")
    lan.add_argument("--address", required=True)
    service = sub.add_parser("service")
    service.add_argument("--ifname", required=True)
    for p in (lan, service):
        p.add_argument("--type", required=True, dest="service_type")
        p.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    if args.side == "lan":
        found = _browse_lan(args.address, args.service_type, args.timeout)
    else:
        found = _browse_service(args.ifname, args.service_type, args.timeout)
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
