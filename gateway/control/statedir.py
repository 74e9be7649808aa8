"""The gateway's state directory: layout, and `init` that creates it once.

DIR/gateway.toml            settings, commented defaults (settings.TEMPLATE)
DIR/ca/ca.key  ca.pem       the CA that signs the HTTPS server and device certificates (key 0600)
DIR/tls/server.key .pem     HTTPS server certificate (SANs from --san; key 0600)
DIR/wireguard/private.key   X25519, base64 of 32 raw bytes like `wg genkey` (0600); public.key
DIR/operator.token          bearer token for /v1/operator/* and /metrics (0600)
DIR/registry.sqlite3        the registry (registry.py)
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cjb.gateway.control import pki
from cjb.gateway.control.errors import ControlError
from cjb.gateway.control.registry import Registry
from cjb.gateway.control.settings import render_template


@dataclass(frozen=True)
class StateDir:
    root: Path

    @property
    def settings(self) -> Path:
        return self.root / "gateway.toml"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca/ca.key"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca/ca.pem"

    @property
    def server_key(self) -> Path:
        return self.root / "tls/server.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "tls/server.pem"

    @property
    def wg_private(self) -> Path:
        return self.root / "wireguard/private.key"

    @property
    def wg_public(self) -> Path:
        return self.root / "wireguard/public.key"

    @property
    def operator_token(self) -> Path:
        return self.root / "operator.token"

    @property
    def registry(self) -> Path:
        return self.root / "registry.sqlite3"

    def read_token(self) -> str:
        return self.operator_token.read_text().strip()

    def wg_public_key(self) -> str:
        return self.wg_public.read_text().strip()


def init_state_dir(
    root: Path,
    sans: list[str],
    endpoint: str,
    listen: str = "::",
    port: int = 8443,
    now: dt.datetime | None = None,
) -> StateDir:
    """Create everything once; refuse when `root` already holds a gateway (or anything else)."""
    layout = StateDir(root)
    if root.exists() and any(root.iterdir()):
        raise ControlError(
            "state-dir-exists",
            f"{root} exists and is not empty; refusing to overwrite a gateway's keys "
            "(choose another --state-dir, or remove it yourself if it is really unused)",
        )
    now = now or dt.datetime.now(dt.UTC)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    for sub in ("ca", "tls", "wireguard"):
        (root / sub).mkdir(mode=0o700)

    ca_key = pki.new_ec_key()
    ca = pki.make_ca(ca_key, "CJB gateway CA", now, pki.cert_serial_from(secrets.token_bytes(8)))
    pki.write_secret(layout.ca_key, pki.key_pem(ca_key))
    layout.ca_cert.write_bytes(pki.cert_pem(ca))

    server_key = pki.new_ec_key()
    server = pki.make_server_cert(
        ca_key, ca, server_key, sans, now, pki.cert_serial_from(secrets.token_bytes(8))
    )
    pki.write_secret(layout.server_key, pki.key_pem(server_key))
    layout.server_cert.write_bytes(pki.cert_pem(server))

    wg_private, wg_public = pki.wireguard_keypair()
    pki.write_secret(layout.wg_private, (wg_private + "\n").encode())
    layout.wg_public.write_text(wg_public + "\n")

    pki.write_secret(layout.operator_token, (secrets.token_urlsafe(32) + "\n").encode())
    layout.settings.write_text(render_template(listen, port, endpoint))
    # Create the registry file 0600 first: SQLite gives its -wal/-shm files the same mode.
    os.close(os.open(layout.registry, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    Registry.open(layout.registry).close()  # creates the schema now, so `init` fails early
    return layout
