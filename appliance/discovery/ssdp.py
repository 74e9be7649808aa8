"""SSDP for the cloud's UPnP devices on the LAN (UPnP Device Architecture 1.1 §1), sans-IO.

`SsdpAdvertiser` answers M-SEARCH (§1.3) for the catalog's device types and produces
NOTIFY ssdp:alive / ssdp:byebye (§1.2) with LOCATION at the tenant's IPv4 service address.
Time and randomness are passed in; the IO adapter sends what it returns.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from ipaddress import IPv4Address

from cjb.common.control.protocol import CatalogService

MULTICAST = ("239.255.255.250", 1900)
MAX_AGE = 1800  # §1.2.2: at least 1800 s
SERVER = "Linux UPnP/1.1 cjb/0.1"
_UUID_NAMESPACE = uuid.UUID("6f1c4a52-4b7e-4d0f-9a55-0c6a0c1b2a11")


@dataclass(frozen=True, slots=True)
class SsdpDevice:
    uuid: str  # "uuid:..."
    device_type: str  # "urn:schemas-upnp-org:device:MediaServer:1"
    location: str  # "http://192.168.0.100:80/upnp/description.xml"

    def notification_types(self) -> list[tuple[str, str]]:
        """(NT, USN) for the three root-device announcements (§1.2.2)."""
        return [
            ("upnp:rootdevice", f"{self.uuid}::upnp:rootdevice"),
            (self.uuid, self.uuid),
            (self.device_type, f"{self.uuid}::{self.device_type}"),
        ]


def devices_for(
    tenant: str, service_ipv4: IPv4Address, catalog: list[CatalogService]
) -> list[SsdpDevice]:
    """One UPnP root device per catalog entry that names a device type and description.

    The UUID is derived from the tenant and instance, so it is stable across restarts
    (§1.1.4: a UDN must not change)."""
    out = []
    for svc in catalog:
        if not svc.upnp_device_type or not svc.upnp_description_path:
            continue
        if svc.control_char_field() is not None:
            continue  # CR/LF would end a header line and let the text write its own headers
        udn = uuid.uuid5(_UUID_NAMESPACE, f"{tenant}/{svc.instance}")
        path = svc.upnp_description_path
        if not path.startswith("/"):
            path = "/" + path
        out.append(
            SsdpDevice(
                f"uuid:{udn}", svc.upnp_device_type, f"http://{service_ipv4}:{svc.port}{path}"
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Outgoing:
    send_at: float
    payload: bytes
    addr: tuple[str, int]


class SsdpAdvertiser:
    def __init__(self, rng: random.Random, now: float, boot_id: int = 1) -> None:
        self._rng = rng
        self._devices: list[SsdpDevice] = []
        self._next_alive = now
        self.boot_id = boot_id
        self.active = False

    # ---------------------------------------------------------------- life cycle

    def set_devices(self, devices: list[SsdpDevice], now: float) -> list[Outgoing]:
        """Byebye for devices that went away, alive for new ones (when active)."""
        removed = [d for d in self._devices if d not in devices]
        added = [d for d in devices if d not in self._devices]
        self._devices = list(devices)
        if not self.active:
            return []
        return self._notify(removed, "ssdp:byebye", now) + self._notify(added, "ssdp:alive", now)

    def activate(self, now: float) -> list[Outgoing]:
        self.active = True
        self._schedule(now)
        return self._notify(self._devices, "ssdp:alive", now)

    def deactivate(self, now: float) -> list[Outgoing]:
        if not self.active:
            return []
        self.active = False
        return self._notify(self._devices, "ssdp:byebye", now)

    def next_deadline(self) -> float | None:
        return self._next_alive if self.active and self._devices else None

    def on_timer(self, now: float) -> list[Outgoing]:
        if not self.active or now < self._next_alive:
            return []
        self._schedule(now)
        return self._notify(self._devices, "ssdp:alive", now)

    def _schedule(self, now: float) -> None:
        # §1.2.2: re-advertise well before max-age runs out; jitter keeps units apart.
        self._next_alive = now + MAX_AGE / 3 + self._rng.uniform(0, 60)

    # ---------------------------------------------------------------- searches

    def on_search(self, payload: bytes, addr: tuple[str, int], now: float) -> list[Outgoing]:
        """Responses to an M-SEARCH, each at a random time within MX (§1.3.3)."""
        if not self.active:
            return []
        headers = _parse_search(payload)
        if headers is None:
            return []
        st = headers.get("ST", "")
        if headers.get("MAN", "").strip('"') != "ssdp:discover":
            return []
        try:
            mx = max(1, min(5, int(headers.get("MX", "1"))))
        except ValueError:
            mx = 1
        out = []
        for device in self._devices:
            for nt, usn in device.notification_types():
                if st == "ssdp:all" or st == nt or _newer_version(device.device_type, st, nt):
                    body = self._response(device, st if st != "ssdp:all" else nt, usn)
                    out.append(Outgoing(now + self._rng.uniform(0, mx), body, addr))
        return out

    # ---------------------------------------------------------------- messages

    def _response(self, device: SsdpDevice, st: str, usn: str) -> bytes:
        lines = [
            "HTTP/1.1 200 OK",
            f"CACHE-CONTROL: max-age={MAX_AGE}",
            "EXT:",
            f"LOCATION: {device.location}",
            f"SERVER: {SERVER}",
            f"ST: {st}",
            f"USN: {usn}",
            f"BOOTID.UPNP.ORG: {self.boot_id}",
            "CONFIGID.UPNP.ORG: 1",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def _notify(self, devices: list[SsdpDevice], nts: str, now: float) -> list[Outgoing]:
        out = []
        for device in devices:
            for nt, usn in device.notification_types():
                lines = ["NOTIFY * HTTP/1.1", "HOST: 239.255.255.250:1900"]
                if nts == "ssdp:alive":
                    lines += [
                        f"CACHE-CONTROL: max-age={MAX_AGE}",
                        f"LOCATION: {device.location}",
                        f"SERVER: {SERVER}",
                    ]
                lines += [
                    f"NT: {nt}",
                    f"NTS: {nts}",
                    f"USN: {usn}",
                    f"BOOTID.UPNP.ORG: {self.boot_id}",
                    "CONFIGID.UPNP.ORG: 1",
                ]
                out.append(Outgoing(now, ("\r\n".join(lines) + "\r\n\r\n").encode(), MULTICAST))
        return out


def _parse_search(payload: bytes) -> dict[str, str] | None:
    if not payload.startswith(b"M-SEARCH * HTTP/1.1") or len(payload) > 4096:
        return None
    headers = {}
    for line in payload.decode("latin-1").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().upper()] = value.strip()
    return headers


def _newer_version(device_type: str, st: str, nt: str) -> bool:
    """§1.3.2: a device of version N answers searches for versions <= N (with ST as asked)."""
    if nt != device_type:
        return False
    base, _, ver = device_type.rpartition(":")
    sbase, _, sver = st.rpartition(":")
    return base == sbase and ver.isdigit() and sver.isdigit() and int(sver) <= int(ver)
