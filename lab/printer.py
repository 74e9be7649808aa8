"""A LAN "printer" for the lab's sites: what a real printer shows on a LAN.

`python -m cjb.lab.printer --address 192.168.0.20 --name "Printer (tenant1)"` registers
`<name>._ipp._tcp.local.` with python-zeroconf at that address (RFC 6762/6763), serves its
UPnP description at http://<address>:8080/description.xml and answers SSDP M-SEARCH for
urn:schemas-upnp-org:device:Printer:1 with the appliance's own sans-IO advertiser. It runs
until SIGTERM, then says goodbye (TTL 0, RFC 6762 §10.1).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import ipaddress
import random
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

IPP_PORT = 631
DESCRIPTION_PORT = 8080
DESCRIPTION_PATH = "/description.xml"
PRINTER_DEVICE = "urn:schemas-upnp-org:device:Printer:1"
SSDP_GROUP = "239.255.255.250"
SSDP_PORT = 1900


def description_xml(name: str) -> str:
    return (
        '<?xml version="1.0"?>\n<root xmlns="urn:schemas-upnp-org:device-1-0">'
        f"<device><deviceType>{PRINTER_DEVICE}</deviceType>"
        f"<friendlyName>{name}</friendlyName></device></root>\n"
    )


def _ssdp_loop(address: ipaddress.IPv4Address, name: str, stop: threading.Event) -> None:
    from cjb.appliance.discovery.ssdp import SsdpAdvertiser, devices_for
    from cjb.common.control.protocol import CatalogService

    svc = CatalogService(
        instance=name,
        service_type="_ipp._tcp",
        port=DESCRIPTION_PORT,
        upnp_device_type=PRINTER_DEVICE,
        upnp_description_path=DESCRIPTION_PATH,
    )
    adv = SsdpAdvertiser(random.Random(), time.monotonic())  # noqa: S311 (MX jitter)
    adv.set_devices(devices_for("lan", address, [svc]), time.monotonic())
    adv.activate(time.monotonic())
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((SSDP_GROUP, SSDP_PORT))  # only what is sent to the group
    s.setsockopt(
        socket.IPPROTO_IP,
        socket.IP_ADD_MEMBERSHIP,
        socket.inet_aton(SSDP_GROUP) + address.packed,
    )
    s.settimeout(0.5)
    # Answers leave from the printer's own address (a socket bound to 0.0.0.0 would pick
    # the namespace's primary one, the site's client) and from port 1900, as most devices
    # send them: the gateway's SSDP ALG recognises a unicast response by that port.
    reply = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    reply.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reply.bind((str(address), SSDP_PORT))
    while not stop.is_set():
        try:
            data, addr = s.recvfrom(4096)
        except TimeoutError:
            continue
        for out in adv.on_search(data, addr, time.monotonic()):
            reply.sendto(out.payload, out.addr)  # answered at once: a lab printer, not a fleet


def main(argv: list[str] | None = None) -> int:
    from zeroconf import IPVersion, ServiceInfo, Zeroconf

    parser = argparse.ArgumentParser(prog="cjb.lab.printer", description=__doc__)
    parser.add_argument("--address", required=True, type=ipaddress.IPv4Address)
    parser.add_argument("--name", required=True)
    args = parser.parse_args(argv)
    address: ipaddress.IPv4Address = args.address
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with tempfile.TemporaryDirectory(prefix="cjb-printer-") as www:
        Path(www, DESCRIPTION_PATH.lstrip("/")).write_text(description_xml(args.name))
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=www)
        httpd = http.server.ThreadingHTTPServer((str(address), DESCRIPTION_PORT), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        threading.Thread(target=_ssdp_loop, args=(address, args.name, stop), daemon=True).start()
        zc = Zeroconf(interfaces=[str(address)], ip_version=IPVersion.V4Only)
        info = ServiceInfo(
            "_ipp._tcp.local.",
            f"{args.name}._ipp._tcp.local.",
            port=IPP_PORT,
            properties={"rp": "ipp/print", "ty": args.name},
            server=f"printer-{address.packed[-1]}.local.",
            addresses=[address.packed],
        )
        zc.register_service(info)
        print(f"printer {args.name!r} registered at {address}", flush=True)
        try:
            while not stop.wait(0.5):
                pass
        finally:
            zc.unregister_service(info)
            zc.close()
            httpd.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
