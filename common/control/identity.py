"""Where an appliance keeps its identity and state on disk (flashed image layout).

  /etc/cjb/operator-ca.pem       operator CA (baked into the image): trust for the first HTTPS call
  /etc/cjb/gateway-url           e.g. https://gateway.example:8443 (baked into the image)
  /etc/cjb/factory/serial        written by `cjb image personalise`
  /etc/cjb/factory/factory-key.pem   Ed25519 private key, PKCS#8 PEM, mode 0600 (never leaves)
  /var/lib/cjb/                  state the agent writes (WireGuard key 0600, device key and
                                 certificate, enrolled config, written atomically)

Tests and the lab use the same layout under another root directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ApplianceLayout:
    root: Path = Path("/")

    @property
    def operator_ca(self) -> Path:
        return self.root / "etc/cjb/operator-ca.pem"

    @property
    def gateway_url(self) -> Path:
        return self.root / "etc/cjb/gateway-url"

    @property
    def serial(self) -> Path:
        return self.root / "etc/cjb/factory/serial"

    @property
    def factory_key(self) -> Path:
        return self.root / "etc/cjb/factory/factory-key.pem"

    @property
    def state_dir(self) -> Path:
        return self.root / "var/lib/cjb"
