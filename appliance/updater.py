"""The appliance's side of image updates (docs/decisions/0009-updates.md): ask the gateway for
an offer over the device's mTLS channel, download the bundle, check its size and sha256, hand
it to the installer (RAUC writes the other slot and checks the operator's signature), and report
each step; after the reboot, mark the slot good only once the gateway was reached again.

Not wired into the agent's loop yet: the image has no second root slot and no RAUC config, so
`check_once` is driven by tests against a real HTTPS gateway, with a stand-in installer.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import ssl
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cjb.common.control.image_version import VERSION_RE

CHUNK = 1 << 16
MAX_BUNDLE = 4 << 30  # a root slot; anything larger is not ours


class UpdateFailed(Exception):
    """A step failed; the message is what the device reports as `detail`."""


@dataclass(frozen=True)
class Offer:
    version: str
    sha256: str
    size: int
    path: str


Installer = Callable[[Path], None]


def rauc_install(bundle: Path) -> None:
    """RAUC checks the signature against its keyring (the operator CA), writes the inactive
    slot and makes it the next boot's primary, on trial until marked good."""
    out = subprocess.run(["rauc", "install", str(bundle)], capture_output=True, text=True)
    if out.returncode != 0:
        raise UpdateFailed(f"rauc install: {(out.stderr or out.stdout).strip()[-300:]}")


def rauc_mark_good() -> None:
    out = subprocess.run(["rauc", "status", "mark-good"], capture_output=True, text=True)
    if out.returncode != 0:
        raise UpdateFailed(f"rauc mark-good: {(out.stderr or out.stdout).strip()[-300:]}")


@dataclass
class Updater:
    host: str
    port: int
    context: ssl.SSLContext  # the device's mTLS context (enrollment's certificate and key)
    download_dir: Path
    running: str
    install: Installer = rauc_install
    timeout: float = 30.0

    def _conn(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            self.host, self.port, context=self.context, timeout=self.timeout
        )

    def offer(self) -> Offer | None:
        conn = self._conn()
        try:
            conn.request("GET", f"/v1/device/update?running={self.running}")
            r = conn.getresponse()
            data = r.read(4096)
        finally:
            conn.close()
        if r.status == 204:
            return None
        if r.status != 200:
            raise UpdateFailed(f"offer: HTTP {r.status}")
        doc = json.loads(data)
        offer = Offer(str(doc["version"]), str(doc["sha256"]), int(doc["size"]), str(doc["path"]))
        if not VERSION_RE.match(offer.version) or not 0 < offer.size <= MAX_BUNDLE:
            raise UpdateFailed(f"offer: bad version or size {offer.version!r} {offer.size}")
        if not offer.path.startswith("/v1/device/update/bundle/"):
            raise UpdateFailed(f"offer: unexpected bundle path {offer.path!r}")
        return offer

    def download(self, offer: Offer) -> Path:
        """Stream to a 0600 file; never more than the offered size; sha256 must match."""
        self.download_dir.mkdir(parents=True, exist_ok=True)
        dest = self.download_dir / f"update-{offer.version}.raucb"
        digest = hashlib.sha256()
        got = 0
        conn = self._conn()
        try:
            conn.request("GET", offer.path)
            r = conn.getresponse()
            if r.status != 200:
                raise UpdateFailed(f"download: HTTP {r.status}")
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                while chunk := r.read(CHUNK):
                    got += len(chunk)
                    if got > offer.size:
                        raise UpdateFailed(f"download: more than the offered {offer.size} bytes")
                    digest.update(chunk)
                    out.write(chunk)
        finally:
            conn.close()
        if got != offer.size or digest.hexdigest() != offer.sha256:
            dest.unlink(missing_ok=True)
            raise UpdateFailed(f"download: {got} bytes, sha256 does not match the offer")
        return dest

    def report(self, version: str, state: str, detail: str = "") -> None:
        body = json.dumps(
            {"version": version, "state": state, "running": self.running, "detail": detail[:500]}
        ).encode()
        conn = self._conn()
        try:
            conn.request(
                "POST", "/v1/device/update/report", body, {"Content-Type": "application/json"}
            )
            conn.getresponse().read(4096)
        finally:
            conn.close()

    def check_once(self) -> str | None:
        """One round: the installed version (reboot into it next), or None (nothing to do).
        Failures are reported to the gateway and raised."""
        offer = self.offer()
        if offer is None:
            return None
        try:
            bundle = self.download(offer)
            try:
                self.install(bundle)
            finally:
                bundle.unlink(missing_ok=True)
        except (UpdateFailed, OSError) as exc:
            self.report(offer.version, "failed", str(exc))
            raise UpdateFailed(str(exc)) from exc
        self.report(offer.version, "installed")
        return offer.version


def confirm_boot(
    updater: Updater, trial_version: str | None, mark_good: Callable[[], None] = rauc_mark_good
) -> None:
    """After a heartbeat succeeded on this boot: a slot on trial becomes good and says so. A
    slot that never gets here is left by the boot loader when its tries run out, and the old
    system reports "rolled-back" on its next round."""
    if trial_version is None:
        return
    mark_good()
    updater.report(trial_version, "good")
