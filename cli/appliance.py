"""`cjb appliance …`: the minimal agent (static config) and its status."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import click

from cjb.appliance.config import ApplianceConfigError, ApplianceModel, load

config_option = click.option(
    "--config",
    "config_path",
    envvar="CJB_APPLIANCE_CONFIG",
    default="/etc/cjb/appliance.json",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
)


def _load(path: Path) -> ApplianceModel:
    try:
        return load(path)
    except ApplianceConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def appliance() -> None:
    """Appliance agent."""


@appliance.command()
@config_option
@click.option("-v", "--verbose", is_flag=True)
def run(config_path: Path, verbose: bool) -> None:
    """Create the LAN bridge and the tunnel port, and keep the port on the bridge."""
    from cjb.appliance.agent import run as run_agent

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    run_agent(_load(config_path))


@appliance.command()
@config_option
def status(config_path: Path) -> None:
    """Tunnel state as the running agent last saw it."""
    from cjb.appliance.agent import status_path

    cfg = _load(config_path)
    path = status_path(cfg)
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        raise click.ClickException(
            f"no status at {path}: is `cjb appliance run` running?"
        ) from None
    age = time.time() - float(data.get("updated", 0))
    state = "running" if age < 5 * cfg.check_interval + 2 else f"NOT RUNNING ({age:.0f}s old)"
    click.echo(f"agent pid {data['pid']}: {state}")
    click.echo(f"  tunnel {data['tunnel']}  vni {data['vni']}  {data['local']} -> {data['remote']}")
    click.echo(f"  up {data['tunnel_up']}  on bridge {data['bridge']}: {data['tunnel_on_bridge']}")
    click.echo(f"  repairs {data['repairs']}  last error {data['error'] or '-'}")
