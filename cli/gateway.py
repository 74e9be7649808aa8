"""`cjb gateway …`: data plane (run, tenant, status) and control plane (init, serve, device)."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import click

from cjb.common.tunnel_mtu import service_mtu_for
from cjb.common.validation import validation_problems
from cjb.gateway.dataplane.config import (
    ConfigFileError,
    GatewayModel,
    TenantModel,
    from_model,
    read_model,
    write_model,
)

if TYPE_CHECKING:
    from cjb.gateway.control.registry import Registry

DEFAULT_CONFIG = "/etc/cjb/gateway.json"

config_option = click.option(
    "--config",
    "config_path",
    envvar="CJB_GATEWAY_CONFIG",
    default=DEFAULT_CONFIG,
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Gateway config / tenant registry (JSON). Env: CJB_GATEWAY_CONFIG.",
)


def _model(path: Path) -> GatewayModel:
    try:
        return read_model(path)
    except ConfigFileError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def gateway() -> None:
    """Gateway: data plane (run, tenant, status) and control plane (init, serve, device)."""


@gateway.command()
@config_option
@click.option("-v", "--verbose", is_flag=True, help="Log every kernel change.")
def run(config_path: Path, verbose: bool) -> None:
    """Reconcile kernel objects, start one translator worker per tenant, publish status."""
    from cjb.gateway.dataplane.daemon import run as run_gateway

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    _model(config_path)  # fail early, with the file and field named
    run_gateway(config_path)


@gateway.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the raw status document.")
def status(config_path: Path, as_json: bool) -> None:
    """Per tenant: state, ports, frames/bytes each way, drops by reason."""
    from cjb.gateway.dataplane.status import read_status, render

    cfg = from_model(config_path, _model(config_path))
    data = read_status(cfg.status_file)
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        click.echo(render(data, cfg.status_file), nl=False)


@gateway.group()
def tenant() -> None:
    """The static tenant registry (a running gateway picks up changes within a second)."""


@tenant.command("add")
@config_option
@click.argument("name")
@click.option("--vni", required=True, type=click.IntRange(1, 0xFFFFFF))
@click.option("--appliance", required=True, help="The appliance's underlay address.")
@click.option("--service-ipv4", default="192.168.0.100", show_default=True)
@click.option("--lan-mtu", default=1500, show_default=True, type=int)
@click.option("--native-ipv6/--no-native-ipv6", default=True, show_default=True)
@click.option("--service-ifname", default=None, help="Service-side link name (default: NAME).")
def tenant_add(
    config_path: Path,
    name: str,
    vni: int,
    appliance: str,
    service_ipv4: str,
    lan_mtu: int,
    native_ipv6: bool,
    service_ifname: str | None,
) -> None:
    """Add tenant NAME (refuses to overwrite an existing one)."""
    model = _model(config_path)
    if name in model.tenants:
        raise click.ClickException(f"tenant {name!r} exists in {config_path}; remove it first")
    try:
        entry = TenantModel(
            vni=vni,
            appliance=ipaddress.ip_address(appliance),
            service_ipv4=ipaddress.IPv4Address(service_ipv4),
            lan_mtu=lan_mtu,
            native_ipv6=native_ipv6,
            service_ifname=service_ifname,
        )
        new = GatewayModel.model_validate(
            {**model.model_dump(), "tenants": {**model.tenants, name: entry}}
        )
    except ValueError as exc:
        raise click.ClickException(f"tenant {name!r}: {exc}") from None
    write_model(config_path, new)
    click.echo(f"added tenant {name} (vni {vni}) to {config_path}")


@tenant.command("remove")
@config_option
@click.argument("name")
def tenant_remove(config_path: Path, name: str) -> None:
    """Remove tenant NAME; a running gateway deletes every kernel object it owned."""
    model = _model(config_path)
    if name not in model.tenants:
        raise click.ClickException(f"no tenant {name!r} in {config_path}")
    tenants = {k: v for k, v in model.tenants.items() if k != name}
    write_model(config_path, model.model_copy(update={"tenants": tenants}))
    click.echo(f"removed tenant {name} from {config_path}")


@tenant.command("list")
@config_option
def tenant_list(config_path: Path) -> None:
    """One line per tenant."""
    cfg = from_model(config_path, _model(config_path))
    click.echo(f"{'tenant':14} {'vni':>8}  {'appliance':28} {'service link':14} native")
    for t in cfg.tenants:
        native = t.native_ifname if t.native_ipv6 else "-"
        click.echo(f"{t.name:14} {t.vni:>8}  {t.appliance!s:28} {t.service_ifname:14} {native}")


@tenant.command("show")
@config_option
@click.argument("name")
def tenant_show(config_path: Path, name: str) -> None:
    """Everything about tenant NAME: config and the kernel objects it owns."""
    cfg = from_model(config_path, _model(config_path))
    try:
        t = cfg.tenant(name)
    except KeyError:
        raise click.ClickException(f"no tenant {name!r} in {config_path}") from None
    rows = [
        ("vni", str(t.vni)),
        ("appliance underlay", str(t.appliance)),
        ("service IPv4 (LAN view)", str(t.service_ipv4)),
        ("service address", str(t.service_address)),
        ("LAN MTU / service MTU", f"{t.lan_mtu} / {service_mtu_for(t.lan_mtu)}"),
        ("tunnel port", t.tunnel_port),
        ("service link", f"{t.service_port} <-> {t.service_ifname} (service host)"),
        (
            "native IPv6 link",
            f"{t.native_port} <-> {t.native_ifname} (service host)" if t.native_ipv6 else "-",
        ),
    ]
    click.echo(f"tenant {name}")
    for key, value in rows:
        click.echo(f"  {key:24} {value}")


# -- control plane: state dir, inventory, operators, HTTPS API --------------------------------
# The device and operator commands use the registry (SQLite, WAL) directly: they run on the
# gateway host as the API's user, beside a running `serve`, which re-reads the registry on
# every request. The HTTP operator API (/v1/operator/*, on the operator listener) offers the
# same for tools.

DEFAULT_STATE_DIR = "/var/lib/cjb-gateway"

state_dir_option = click.option(
    "--state-dir",
    envvar="CJB_GATEWAY_STATE",
    default=DEFAULT_STATE_DIR,
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Gateway state directory (CA, keys, registry). Env: CJB_GATEWAY_STATE.",
)


@contextlib.contextmanager
def _registry(state_dir: Path) -> Iterator[Registry]:
    """The registry, and afterwards the data plane's export brought up to date (a running
    `serve` does that too; this covers a stopped one)."""
    from cjb.gateway.control.errors import ControlError
    from cjb.gateway.control.export import write_export
    from cjb.gateway.control.registry import Registry
    from cjb.gateway.control.statedir import StateDir

    layout = StateDir(state_dir)
    try:
        layout.require_current()
    except ControlError as exc:
        raise click.ClickException(exc.message) from None
    if not layout.registry.exists():
        raise click.ClickException(
            f"{layout.registry}: no registry; run `cjb gateway init --state-dir {state_dir}`"
        )
    # As root on another user's registry, SQLite gives the -wal/-shm files it creates to the
    # database file's owner, and write_export keeps export/'s owner: the API can still open
    # everything afterwards.
    try:
        opened = Registry.open(layout.registry)
    except ControlError as exc:  # e.g. a registry a newer CJB migrated
        raise click.ClickException(f"{layout.registry}: {exc.message}") from None
    with opened as reg:
        generation = reg.generation()
        yield reg
        if reg.generation() != generation and layout.export_dir.is_dir():
            write_export(reg, layout.desired)


@gateway.command()
@state_dir_option
@click.option(
    "--san",
    "sans",
    multiple=True,
    default=("localhost", "127.0.0.1", "::1"),
    show_default=True,
    help="Subject alternative name of the HTTPS certificate (DNS name or IP); repeat.",
)
@click.option(
    "--endpoint",
    default="gateway.example:51820",
    show_default=True,
    help="WireGuard endpoint appliances dial (host:port).",
)
@click.option("--listen", default="::", show_default=True, help="Device HTTPS listen address.")
@click.option("--port", default=8443, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--operator-listen",
    default="127.0.0.1",
    show_default=True,
    help="Operator API and /metrics listen address (keep it off the internet).",
)
@click.option("--operator-port", default=8444, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--api-user",
    default=None,
    help="Owner of api/ (CA, TLS key, registry); needs root. Default: the caller.",
)
@click.option(
    "--dataplane-user",
    default=None,
    help="Owner of dataplane/ (WireGuard private key); needs root. Default: the caller.",
)
@click.option(
    "--operator",
    "operator_name",
    default=None,
    help="Also create the operator credential NAME and print its token (once).",
)
def init(
    state_dir: Path,
    sans: tuple[str, ...],
    endpoint: str,
    listen: str,
    port: int,
    operator_listen: str,
    operator_port: int,
    api_user: str | None,
    dataplane_user: str | None,
    operator_name: str | None,
) -> None:
    """Create the state dir: api/ (CA, HTTPS certificate, registry, settings), dataplane/
    (WireGuard private key) and export/ (WireGuard public key, the data plane's export)."""
    from cjb.gateway.control.errors import ControlError
    from cjb.gateway.control.statedir import Owners, init_state_dir

    if (api_user is None) != (dataplane_user is None):
        raise click.ClickException("give both --api-user and --dataplane-user, or neither")
    try:
        owners = Owners.of(api_user, dataplane_user) if api_user and dataplane_user else None
        if owners is not None and os.geteuid() != 0:
            raise click.ClickException("--api-user/--dataplane-user need root (to chown)")
        layout = init_state_dir(
            state_dir,
            list(sans),
            endpoint,
            listen,
            port,
            owners=owners,
            operator_listen=operator_listen,
            operator_port=operator_port,
        )
    except ControlError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"gateway state created in {state_dir}")
    click.echo(f"  settings       {layout.settings} (commented defaults; edit, then serve)")
    click.echo(f"  CA certificate {layout.ca_cert} (bake into appliance images)")
    click.echo(f"  HTTPS SANs     {', '.join(sans)}")
    click.echo(f"  device API     {listen} port {port}")
    click.echo(f"  operator API   {operator_listen} port {operator_port} (and /metrics)")
    click.echo(
        f"  WireGuard key  {layout.wg_public_key()} (public; private in {layout.wg_private})"
    )
    click.echo(f"  data plane     registry.path = {layout.desired} (read-only export)")
    if operator_name is not None:
        from cjb.gateway.control.registry import Registry

        with Registry.open(layout.registry) as reg:
            _add_operator(reg, operator_name)
    else:
        click.echo("  operators      none yet: `cjb gateway operator add NAME`")


def _add_operator(reg: Registry, name: str) -> None:
    from cjb.gateway.control import operators
    from cjb.gateway.control.errors import ControlError

    try:
        cred = operators.new_credential(name)
        reg.add_operator(cred.name, cred.salt, cred.digest)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    except ControlError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"operator credential {name!r} created; its token (shown only now):")
    click.echo(cred.token)


@gateway.command()
@state_dir_option
@click.option("--listen", default=None, help="Override [api] listen.")
@click.option("--port", default=None, type=click.IntRange(0, 65535), help="Override [api] port.")
@click.option("--operator-listen", default=None, help="Override [operator] listen.")
@click.option(
    "--operator-port", default=None, type=click.IntRange(0, 65535), help="Override [operator] port."
)
@click.option(
    "--dataplane-status",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The data plane's status file: adds its per-tenant counters to /metrics.",
)
def serve(
    state_dir: Path,
    listen: str | None,
    port: int | None,
    operator_listen: str | None,
    operator_port: int | None,
    dataplane_status: Path | None,
) -> None:
    """Run the HTTPS enrollment and device API, and on its own listener the operator API and
    /metrics (JSON logs on stderr)."""
    import asyncio

    from cjb.gateway.control import logs
    from cjb.gateway.control.errors import ControlError
    from cjb.gateway.control.server import serve as run_server
    from cjb.gateway.control.settings import SettingsError

    extra = []
    if dataplane_status is not None:
        from cjb.gateway.dataplane.metrics import StatusFileCollector

        extra.append(StatusFileCollector(dataplane_status))
    logs.setup()
    try:
        asyncio.run(run_server(state_dir, listen, port, extra, operator_listen, operator_port))
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    except ControlError as exc:
        raise click.ClickException(exc.message) from None


@gateway.command("migrate-state")
@state_dir_option
@click.option("--api-user", default=None, help="Owner of api/ afterwards (needs root).")
@click.option("--dataplane-user", default=None, help="Owner of dataplane/ afterwards (root).")
def migrate_state(state_dir: Path, api_user: str | None, dataplane_user: str | None) -> None:
    """Split an old single-directory state dir into api/, dataplane/ and export/ (says what
    moved where; the old operator.token becomes the hashed credential 'migrated')."""
    from cjb.gateway.control.errors import ControlError
    from cjb.gateway.control.statedir import Owners, migrate_state_dir

    if (api_user is None) != (dataplane_user is None):
        raise click.ClickException("give both --api-user and --dataplane-user, or neither")
    try:
        owners = Owners.of(api_user, dataplane_user) if api_user and dataplane_user else None
        migrate_state_dir(state_dir, owners, say=click.echo)
    except ControlError as exc:
        raise click.ClickException(exc.message) from None


@gateway.group()
def operator() -> None:
    """Operator credentials for the operator API and /metrics: named, revocable, hashed."""


@operator.command("add")
@state_dir_option
@click.argument("name")
def operator_add(state_dir: Path, name: str) -> None:
    """Create credential NAME and print its token once (only a hash is kept)."""
    with _registry(state_dir) as reg:
        _add_operator(reg, name)


@operator.command("list")
@state_dir_option
def operator_list(state_dir: Path) -> None:
    """One line per credential: name, created, last used, revoked."""
    import datetime as dt

    def when(t: float | None) -> str:
        return "-" if t is None else dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M")

    with _registry(state_dir) as reg:
        rows = reg.operators()
    click.echo(f"{'name':24} {'created (UTC)':17} {'last used':17} revoked")
    for r in rows:
        click.echo(
            f"{r.name:24} {when(r.created_at):17} {when(r.last_used_at):17} {when(r.revoked_at)}"
        )


@operator.command("revoke")
@state_dir_option
@click.argument("name")
def operator_revoke(state_dir: Path, name: str) -> None:
    """Revoke credential NAME: refused from the next request on."""
    from cjb.gateway.control.errors import ControlError

    with _registry(state_dir) as reg:
        try:
            reg.revoke_operator(name)
        except ControlError as exc:
            raise click.ClickException(exc.message) from None
    click.echo(f"revoked operator credential {name!r}")


@gateway.group()
def device() -> None:
    """The device inventory: add, import, list, show, revoke, reinstate."""


@device.command("add")
@state_dir_option
@click.option("--serial", required=True)
@click.option("--pubkey", required=True, help="Factory Ed25519 public key (base64, 32 bytes).")
@click.option("--tenant", required=True, help="Tenant name (created if new).")
@click.option("--model", default="cjb-appliance", show_default=True)
def device_add(state_dir: Path, serial: str, pubkey: str, tenant: str, model: str) -> None:
    """Add one unit to the inventory."""
    from pydantic import ValidationError

    from cjb.common.control.protocol import InventoryRecord
    from cjb.gateway.control.errors import ControlError

    try:
        rec = InventoryRecord(serial=serial, factory_public_key=pubkey, tenant=tenant, model=model)
    except ValidationError as exc:
        problems = "; ".join(validation_problems(exc))
        raise click.ClickException(f"{problems} (see `cjb gateway device add --help`)") from None
    with _registry(state_dir) as reg:
        try:
            added = reg.add_device(rec.serial, rec.factory_public_key, rec.tenant, rec.model)
        except ControlError as exc:
            raise click.ClickException(exc.message) from None
    click.echo(f"{'added' if added else 'already present'}: {serial} (tenant {tenant})")


@device.command("import")
@state_dir_option
@click.option("--tenant", default=None, help="Tenant for records that name none.")
@click.argument("file", type=click.File("r"))
def device_import(state_dir: Path, tenant: str | None, file: TextIO) -> None:
    """Import InventoryRecord JSON lines (what `cjb image personalise` prints); all or nothing."""
    from pydantic import ValidationError

    from cjb.common.control.protocol import InventoryRecord
    from cjb.gateway.control.errors import ControlError

    records = []
    for lineno, line in enumerate(file, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            rec = InventoryRecord.model_validate_json(line)
        except ValidationError as exc:
            problems = "; ".join(validation_problems(exc, top="line"))
            raise click.ClickException(f"{file.name}:{lineno}: {problems}") from None
        records.append((rec.serial, rec.factory_public_key, rec.tenant or tenant, rec.model))
    with _registry(state_dir) as reg:
        try:
            added, unchanged = reg.import_records(records)
        except ControlError as exc:
            raise click.ClickException(exc.message) from None
    click.echo(f"imported {added} device(s), {unchanged} already present")


@device.command("list")
@state_dir_option
def device_list(state_dir: Path) -> None:
    """One line per device: tenant, state, VNI, overlay address, last heartbeat."""
    import time

    from cjb.gateway.control.render import device_table

    with _registry(state_dir) as reg:
        tenants = {t.name: t for t in reg.tenants()}
        click.echo(device_table(reg.devices(), tenants, time.time()), nl=False)


@device.command("show")
@state_dir_option
@click.argument("serial")
def device_show(state_dir: Path, serial: str) -> None:
    """Everything about one device: allocation, certificates, heartbeat, audit events."""
    import time

    from cjb.gateway.control.render import device_detail

    with _registry(state_dir) as reg:
        d = reg.device(serial)
        if d is None:
            raise click.ClickException(f"no device {serial!r} in the inventory")
        t = reg.tenant(d.tenant) if d.tenant else None
        text = device_detail(d, t, reg.certificates(serial), reg.audit_log(serial, 20), time.time())
    click.echo(text, nl=False)


@device.command("revoke")
@state_dir_option
@click.argument("serial")
@click.option("--reason", default="operator", show_default=True)
def device_revoke(state_dir: Path, serial: str, reason: str) -> None:
    """Revoke a device: its certificates stop working at once; it cannot enroll again."""
    from cjb.gateway.control.errors import ControlError

    with _registry(state_dir) as reg:
        try:
            d = reg.revoke(serial, reason, by="cli")
        except ControlError as exc:
            raise click.ClickException(exc.message) from None
    click.echo(f"revoked {d.serial} (tenant {d.tenant or '-'}): {reason}")


@device.command("reinstate")
@state_dir_option
@click.argument("serial")
def device_reinstate(state_dir: Path, serial: str) -> None:
    """Return a revoked device to the inventory so it can enroll again with new keys.

    For a factory-reset unit; its old certificates stay revoked."""
    from cjb.gateway.control.errors import ControlError

    with _registry(state_dir) as reg:
        try:
            d = reg.reinstate(serial, by="cli")
        except ControlError as exc:
            raise click.ClickException(exc.message) from None
    click.echo(f"reinstated {d.serial} (tenant {d.tenant or '-'}): it may enroll again")


@gateway.group()
def catalog() -> None:
    """A tenant's cloud-service catalog (announced on its LAN)."""


@catalog.command("show")
@state_dir_option
@click.argument("tenant")
def catalog_show(state_dir: Path, tenant: str) -> None:
    """Print TENANT's catalog as JSON, with its config_version."""
    with _registry(state_dir) as reg:
        t = reg.tenant(tenant)
    if t is None:
        raise click.ClickException(f"no tenant {tenant!r}")
    doc = {"tenant": t.name, "config_version": t.config_version, "catalog": t.catalog}
    click.echo(json.dumps(doc, indent=2))


@catalog.command("set")
@state_dir_option
@click.argument("tenant")
@click.argument("file", type=click.File("r"))
def catalog_set(state_dir: Path, tenant: str, file: TextIO) -> None:
    """Replace TENANT's catalog with FILE (a JSON list of CatalogService); bumps
    config_version, so appliances fetch it at their next heartbeat."""
    from cjb.gateway.control.catalog import catalog_doc
    from cjb.gateway.control.errors import ControlError

    try:
        doc = catalog_doc(file.read())
    except ControlError as exc:
        raise click.ClickException(f"{file.name}: {exc.message}") from None
    with _registry(state_dir) as reg:
        try:
            t = reg.set_catalog(tenant, doc)
        except ControlError as exc:
            raise click.ClickException(exc.message) from None
    click.echo(f"tenant {t.name}: {len(doc)} service(s), config_version {t.config_version}")


@gateway.command()
@click.option(
    "--python-only",
    is_flag=True,
    help="Skip the kernel fast path (it needs root and creates a scratch network namespace).",
)
def selftest(python_only: bool) -> None:
    """Run the shipped RFC vectors against the installed translator.

    Both paths: the Python translator, and the kernel fast path (the installed BPF object
    on a veth pair in a scratch namespace, removed afterwards). Prints a table; exits 1
    when a vector fails on a path that ran. Where the kernel path cannot run (not root, no
    BPF object, no libbpf) its column says why and the Python results decide.
    """
    from cjb.gateway.dataplane.selftest import render, run_selftest

    report = run_selftest(kernel=not python_only)
    click.echo(render(report))
    if not report.ok:
        raise SystemExit(1)


# `cjb gateway update …` lives in its own module (image updates, docs/decisions/0009-updates.md).
from cjb.cli.gateway_update import update as _update  # noqa: E402

gateway.add_command(_update)
