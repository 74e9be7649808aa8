"""The gateway's state directory: layout, `init` that creates it once, and the migration from
the single-directory layout. Two users, two private directories, one shared read-only export:

DIR/api/            API user (cjb-gw-api), 0700: what only `cjb gateway serve` may read
    gateway.toml        settings, commented defaults (settings.TEMPLATE)
    ca/ca.key ca.pem    the CA that signs the HTTPS server and device certificates (key 0600)
    tls/server.key .pem HTTPS server certificate (SANs from --san; key 0600)
    registry.sqlite3    the registry (registry.py): inventory, operator credential hashes, audit
DIR/dataplane/      data-plane user (cjb-gw-data), 0700: what only `cjb gateway run` may read
    wireguard/private.key   X25519, base64 like `wg genkey` (0600)
DIR/export/         API user, group of the data-plane user, 2750 (setgid: files inherit it)
    wireguard.pub       the gateway's WireGuard public key (0644; the API puts it in DeviceConfig)
    desired.json        what the data plane needs from the registry (0640), see export.py

Why an export rather than the registry itself: the data plane parses untrusted frames with
CAP_NET_ADMIN, so it gets only tenants, VNIs, overlay addresses and WireGuard public keys, and
read-only; a group-readable SQLite file in WAL mode would need its -shm file writable by every
reader, and would show it the factory keys, operator hashes and audit log besides.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import pwd
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cjb.common.private_file import atomic_write
from cjb.gateway.control import pki
from cjb.gateway.control.errors import ControlError
from cjb.gateway.control.registry import Registry
from cjb.gateway.control.settings import render_template


@dataclass(frozen=True)
class Owners:
    """Who owns what: uids and the data plane's gid (None: leave the creator's)."""

    api_uid: int
    api_gid: int
    data_uid: int
    data_gid: int

    @classmethod
    def of(cls, api_user: str, dataplane_user: str) -> Owners:
        """By user name, or by a number (uid = gid, no passwd entry needed: the lab)."""
        api, data = _ids(api_user), _ids(dataplane_user)
        return cls(*api, *data)


def _ids(user: str) -> tuple[int, int]:
    if user.isdigit():
        return int(user), int(user)
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ControlError(
            "unknown-user",
            f"no such user {user}; create the users first "
            "(gateway/systemd/cjb-gateway.sysusers.conf, then `systemd-sysusers`)",
        ) from None
    return entry.pw_uid, entry.pw_gid


@dataclass(frozen=True)
class StateDir:
    root: Path

    @property
    def api_dir(self) -> Path:
        return self.root / "api"

    @property
    def dataplane_dir(self) -> Path:
        return self.root / "dataplane"

    @property
    def export_dir(self) -> Path:
        return self.root / "export"

    @property
    def settings(self) -> Path:
        return self.api_dir / "gateway.toml"

    @property
    def ca_key(self) -> Path:
        return self.api_dir / "ca/ca.key"

    @property
    def ca_cert(self) -> Path:
        return self.api_dir / "ca/ca.pem"

    @property
    def server_key(self) -> Path:
        return self.api_dir / "tls/server.key"

    @property
    def server_cert(self) -> Path:
        return self.api_dir / "tls/server.pem"

    @property
    def registry(self) -> Path:
        return self.api_dir / "registry.sqlite3"

    @property
    def wg_private(self) -> Path:
        return self.dataplane_dir / "wireguard/private.key"

    @property
    def wg_public(self) -> Path:
        return self.export_dir / "wireguard.pub"

    @property
    def desired(self) -> Path:
        return self.export_dir / "desired.json"

    def wg_public_key(self) -> str:
        return self.wg_public.read_text().strip()

    def is_legacy(self) -> bool:
        """The single-directory layout of earlier versions (migrate_state_dir moves it)."""
        return (self.root / "registry.sqlite3").exists() and not self.api_dir.exists()

    def require_current(self) -> None:
        if self.is_legacy():
            raise ControlError(
                "state-dir-legacy",
                f"{self.root} has the old single-directory layout; run "
                f"`cjb gateway migrate-state --state-dir {self.root}` (as root, with "
                "--api-user/--dataplane-user under systemd) to split it",
            )


def _blank(root: Path) -> bool:
    """Nothing but empty directories (what cjb-gateway.tmpfiles.conf creates before init)."""
    return all(p.is_dir() and not p.is_symlink() for p in root.rglob("*"))


def _mkdir(path: Path, mode: int, owner: tuple[int, int] | None) -> None:
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    os.chmod(path, mode)  # mkdir's mode passes through the umask
    if owner is not None:
        os.chown(path, *owner)


def _dirs(layout: StateDir, owners: Owners | None) -> None:
    api = (owners.api_uid, owners.api_gid) if owners else None
    data = (owners.data_uid, owners.data_gid) if owners else None
    shared = (owners.api_uid, owners.data_gid) if owners else None
    _mkdir(layout.root, 0o755, (0, 0) if owners else None)
    _mkdir(layout.api_dir, 0o700, api)
    for sub in ("ca", "tls"):
        _mkdir(layout.api_dir / sub, 0o700, api)
    _mkdir(layout.dataplane_dir, 0o700, data)
    _mkdir(layout.dataplane_dir / "wireguard", 0o700, data)
    # setgid: files the API creates there take the data plane's group (so it can read them).
    _mkdir(layout.export_dir, 0o2750, shared)


def init_state_dir(
    root: Path,
    sans: list[str],
    endpoint: str,
    listen: str = "::",
    port: int = 8443,
    now: dt.datetime | None = None,
    owners: Owners | None = None,
    operator_listen: str = "127.0.0.1",
    operator_port: int = 8444,
) -> StateDir:
    """Create everything once; refuse when `root` already holds a gateway (or anything else).
    With `owners` (run as root) each part goes to its user; without, all stays the caller's."""
    layout = StateDir(root)
    if root.exists() and not _blank(root):
        raise ControlError(
            "state-dir-exists",
            f"{root} exists and is not empty; refusing to overwrite a gateway's keys "
            "(choose another --state-dir, or remove it yourself if it is really unused)",
        )
    now = now or dt.datetime.now(dt.UTC)
    _dirs(layout, owners)
    api = (owners.api_uid, owners.api_gid) if owners else None
    data = (owners.data_uid, owners.data_gid) if owners else None

    ca_key = pki.new_ec_key()
    ca = pki.make_ca(ca_key, "CJB gateway CA", now, pki.cert_serial_from(secrets.token_bytes(8)))
    pki.write_secret(layout.ca_key, pki.key_pem(ca_key), api)
    atomic_write(layout.ca_cert, pki.cert_pem(ca), 0o644, owner=api)

    server_key = pki.new_ec_key()
    server = pki.make_server_cert(
        ca_key, ca, server_key, sans, now, pki.cert_serial_from(secrets.token_bytes(8))
    )
    pki.write_secret(layout.server_key, pki.key_pem(server_key), api)
    atomic_write(layout.server_cert, pki.cert_pem(server), 0o644, owner=api)

    wg_private, wg_public = pki.wireguard_keypair()
    pki.write_secret(layout.wg_private, (wg_private + "\n").encode(), data)
    atomic_write(layout.wg_public, wg_public + "\n", 0o644, owner=api)

    text = render_template(listen, port, endpoint, operator_listen, operator_port)
    atomic_write(layout.settings, text, 0o600, owner=api)
    # Create the registry file 0600 first: SQLite gives its -wal/-shm files the same mode.
    os.close(os.open(layout.registry, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    if api is not None:
        os.chown(layout.registry, *api)
    with Registry.open(layout.registry) as reg:  # creates the schema now, so `init` fails early
        export_desired(reg, layout)
    if api is not None:
        for extra in layout.api_dir.glob("registry.sqlite3-*"):
            os.chown(extra, *api)
    return layout


def export_desired(reg: Registry, layout: StateDir) -> int:
    """Write export/desired.json from the registry; returns the generation written."""
    from cjb.gateway.control.export import write_export

    return write_export(reg, layout.desired)


# -- migration from the single-directory layout ----------------------------------------------

# (old path relative to the state dir, new path relative to it, who owns it after)
_MOVES = (
    ("gateway.toml", "api/gateway.toml", "api"),
    ("ca/ca.key", "api/ca/ca.key", "api"),
    ("ca/ca.pem", "api/ca/ca.pem", "api"),
    ("tls/server.key", "api/tls/server.key", "api"),
    ("tls/server.pem", "api/tls/server.pem", "api"),
    ("registry.sqlite3", "api/registry.sqlite3", "api"),
    ("registry.sqlite3-wal", "api/registry.sqlite3-wal", "api"),
    ("registry.sqlite3-shm", "api/registry.sqlite3-shm", "api"),
    ("wireguard/private.key", "dataplane/wireguard/private.key", "data"),
    ("wireguard/public.key", "export/wireguard.pub", "api"),
)


def migrate_state_dir(
    root: Path, owners: Owners | None = None, say: Callable[[str], None] = print
) -> StateDir:
    """Split an old single-directory state dir into api/, dataplane/ and export/, saying what
    moved where. The old static operator.token is turned into the credential "migrated"
    (its hash only) and the plaintext file is removed: the same token keeps working."""
    from cjb.gateway.control import operators

    layout = StateDir(root)
    if not layout.is_legacy():
        raise ControlError(
            "not-legacy", f"{root} is not an old single-directory state dir; nothing to migrate"
        )
    _dirs(layout, owners)
    who = {
        "api": (owners.api_uid, owners.api_gid) if owners else None,
        "data": (owners.data_uid, owners.data_gid) if owners else None,
    }
    for old_rel, new_rel, owner in _MOVES:
        old, new = root / old_rel, root / new_rel
        if not old.exists():
            continue
        os.replace(old, new)
        ids = who[owner]
        if ids is not None:
            os.chown(new, *ids)
        say(f"moved {old} -> {new}")
    if (layout.wg_public).exists():
        os.chmod(layout.wg_public, 0o644)
    for emptied in ("ca", "tls", "wireguard"):
        with contextlib.suppress(OSError):
            (root / emptied).rmdir()
    token_file = root / "operator.token"
    with Registry.open(layout.registry) as reg:
        if token_file.exists():
            secret = token_file.read_text().strip()
            salt = secrets.token_bytes(16)
            reg.add_operator("migrated", salt, operators.derive(secret, salt))
            token_file.unlink()
            say(
                f"removed {token_file}: its token is now the operator credential 'migrated' "
                "(stored hashed). Send it as `Authorization: Bearer cjbop.migrated.<old token>`"
                ", or better: `cjb gateway operator add NAME`, then "
                "`cjb gateway operator revoke migrated`"
            )
        export_desired(reg, layout)
    if owners is not None:  # SQLite may have made -wal/-shm files as root meanwhile
        for extra in layout.api_dir.glob("registry.sqlite3*"):
            os.chown(extra, owners.api_uid, owners.api_gid)
    say(f"wrote {layout.desired} (the data plane's read-only view of the registry)")
    say(
        f'point the data plane\'s gateway.json at it: "wireguard": {{"private_key_file": '
        f'"{layout.wg_private}"}}, "registry": {{"path": "{layout.desired}"}}'
    )
    return layout
