"""`cjb gateway …`: run the data plane, manage the static tenant registry, show status."""

from __future__ import annotations

import ipaddress
import json
import logging
import sys
from pathlib import Path

import click

from cjb.gateway.dataplane.config import (
    ConfigFileError,
    GatewayModel,
    TenantModel,
    from_model,
    read_model,
    write_model,
)

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
    """Gateway data plane: tenants and status."""


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
        ("LAN MTU / service MTU", f"{t.lan_mtu} / {t.lan_mtu + 20}"),
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
