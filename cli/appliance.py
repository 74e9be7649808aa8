"""`cjb appliance …`: the agent (enrolled or static mode) and its status screen."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import click

from cjb.appliance.config import ApplianceConfigError, ApplianceModel, load_or_default

config_option = click.option(
    "--config",
    "config_path",
    envvar="CJB_APPLIANCE_CONFIG",
    default=None,
    help="Agent config (JSON). Default: /etc/cjb/appliance.json if present, else built-in "
    "defaults (enrolled mode, identity under /).",
    type=click.Path(dir_okay=False, path_type=Path),
)


def _load(path: Path | None) -> ApplianceModel:
    try:
        return load_or_default(path)
    except ApplianceConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def appliance() -> None:
    """Appliance agent."""


@appliance.command()
@config_option
@click.option("-v", "--verbose", is_flag=True)
def run(config_path: Path | None, verbose: bool) -> None:
    """Run the agent: enroll (or use the static tunnel), build the tunnel, keep it healthy.

    With `tunnel` in the config it runs the static issue-3 agent; otherwise it reads the
    factory identity, enrolls with the gateway and follows its configuration.
    """
    from cjb.appliance.agent import run as run_agent
    from cjb.appliance.control_client import ControlClientError
    from cjb.appliance.keys import IdentityError

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        run_agent(_load(config_path))
    except (IdentityError, ControlClientError) as exc:
        raise click.ClickException(str(exc)) from None


def _read_status(cfg: ApplianceModel) -> dict[str, Any]:
    path = Path(cfg.state_dir) / "status.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        raise click.ClickException(
            f"no status at {path}: is `cjb appliance run` running?"
        ) from None
    return data


def _enrollment(phase: str, line: str) -> str:
    return line if line.startswith(phase) else f"{phase}: {line}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    return f"{seconds:.0f} s ago"


@appliance.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the raw status document.")
def status(config_path: Path | None, as_json: bool) -> None:
    """One screen: identity, enrollment, tenant, tunnel, last handshake, counters."""
    cfg = _load(config_path)
    data = _read_status(cfg)
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    age = time.time() - float(data.get("updated", 0))
    running = "running" if age < 5 * cfg.check_interval + 2 else f"NOT RUNNING ({age:.0f}s old)"
    click.echo(f"agent pid {data['pid']}: {running}  ({data.get('mode', 'static')} mode)")
    if data.get("mode") != "enrolled":
        click.echo(
            f"  tunnel {data['tunnel']}  vni {data['vni']}  {data['local']} -> {data['remote']}"
        )
        click.echo(
            f"  up {data['tunnel_up']}  on bridge {data['bridge']}: {data['tunnel_on_bridge']}"
        )
        click.echo(f"  repairs {data['repairs']}  last error {data['error'] or '-'}")
        for name, n in sorted((data.get("wan_input") or {}).items()):
            click.echo(f"    {name:<24} {n}")
        for error in data.get("wan_input_errors") or []:
            click.echo(f"  error: {error}")
        return
    rows = [
        ("serial", data["serial"]),
        ("factory key", data["factory_key_fingerprint"]),
        ("enrollment", _enrollment(data["phase"], data["status_line"])),
        ("tenant", data.get("tenant") or "-"),
        ("service address", data.get("service_ipv4") or "-"),
        (
            "tunnel",
            f"{data['tunnel']} {'up' if data['tunnel_up'] else 'DOWN'}, "
            f"{'on' if data['tunnel_on_bridge'] else 'NOT on'} {data['bridge']}, "
            f"vni {data.get('vni') or '-'}: {data['tunnel_detail']}",
        ),
        ("last handshake", _age(data.get("last_handshake_age"))),
        ("discovery", data.get("discovery") or "-"),
        ("vxlan guard", data.get("vxlan_guard") or "-"),
    ]
    lan = data.get("lan")
    if lan:
        rows.append(("LAN", f"{lan['prefix']} router {lan.get('router') or '-'}"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"  {name:<{width}}  {value}")
    counters = data.get("counters", {})
    click.echo("  counters:")
    for name in sorted(counters):
        click.echo(f"    {name:<24} {counters[name]}")
    for error in data.get("errors", []):
        click.echo(f"  error: {error}")
