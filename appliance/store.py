"""The enrolled state on disk: one JSON file, replaced atomically, so a restart (or a power
cut at any moment) finds either the old enrollment or the new one, never half of each.

  <state_dir>/enrollment.json   the EnrollResponse, with `config` replaced by newer fetches
  <state_dir>/device-cert.pem   the device certificate (for the TLS client; derived, rewritten)
  <state_dir>/gateway-ca.pem    the gateway CA (server trust after enrollment; derived)
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from pydantic import ValidationError

from cjb.appliance.keys import write_private
from cjb.common.control.protocol import DeviceConfig, EnrollResponse

ENROLLMENT = "enrollment.json"
DEVICE_CERT = "device-cert.pem"
GATEWAY_CA = "gateway-ca.pem"


class Store:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir

    @property
    def cert_file(self) -> Path:
        return self.dir / DEVICE_CERT

    @property
    def ca_file(self) -> Path:
        return self.dir / GATEWAY_CA

    def load(self) -> EnrollResponse | None:
        """The persisted enrollment; None when there is none or it is unreadable (re-enroll)."""
        try:
            raw = json.loads((self.dir / ENROLLMENT).read_text())
            enrollment = EnrollResponse.model_validate(raw)
        except (FileNotFoundError, json.JSONDecodeError, ValidationError):
            return None
        # The derived files may be missing after a crash between writes: restore them.
        self._write_derived(enrollment)
        return enrollment

    def save(self, enrollment: EnrollResponse) -> None:
        self._write_derived(enrollment)
        write_private(self.dir / ENROLLMENT, enrollment.model_dump_json(indent=2).encode())

    def save_config(self, enrollment: EnrollResponse, config: DeviceConfig) -> EnrollResponse:
        updated = enrollment.model_copy(update={"config": config})
        self.save(updated)
        return updated

    def forget(self) -> None:
        for name in (ENROLLMENT, DEVICE_CERT, GATEWAY_CA):
            with contextlib.suppress(FileNotFoundError):
                (self.dir / name).unlink()

    def _write_derived(self, enrollment: EnrollResponse) -> None:
        if self._differs(self.cert_file, enrollment.device_certificate_pem):
            write_private(self.cert_file, enrollment.device_certificate_pem.encode(), 0o644)
        if self._differs(self.ca_file, enrollment.ca_certificate_pem):
            write_private(self.ca_file, enrollment.ca_certificate_pem.encode(), 0o644)

    @staticmethod
    def _differs(path: Path, text: str) -> bool:
        try:
            return path.read_text() != text
        except FileNotFoundError:
            return True
