"""`cjb gateway update …`: releases, staged roll-outs, progress (gateway/control/updates.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from cjb.gateway.control.registry import Registry
    from cjb.gateway.control.updates import UpdateStore

# The same option as the other `cjb gateway` commands (not imported: cli/gateway.py imports
# this module to register the group).
state_dir_option = click.option(
    "--state-dir",
    envvar="CJB_GATEWAY_STATE",
    default="/var/lib/cjb-gateway",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Gateway state directory (CA, keys, registry). Env: CJB_GATEWAY_STATE.",
)


def _registry(state_dir: Path) -> Registry:
    from cjb.gateway.control.registry import Registry
    from cjb.gateway.control.statedir import StateDir

    layout = StateDir(state_dir)
    if not layout.registry.exists():
        raise click.ClickException(
            f"{layout.registry}: no registry; run `cjb gateway init --state-dir {state_dir}`"
        )
    return Registry.open(layout.registry)


@click.group()
def update() -> None:
    """Appliance image updates: add a signed release, roll it out in stages, watch progress."""


def _store(state_dir: Path) -> UpdateStore:
    from cjb.gateway.control.statedir import StateDir
    from cjb.gateway.control.updates import UpdateStore

    api_dir = StateDir(state_dir).api_dir  # the API's own directory, beside the registry
    if not api_dir.is_dir():
        raise click.ClickException(f"{api_dir}: no gateway state directory (cjb gateway init)")
    return UpdateStore.open(api_dir)


@update.command("release")
@state_dir_option
@click.option("--version", "version", required=True, help="The image version inside the bundle.")
@click.argument("bundle", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def release(state_dir: Path, version: str, bundle: Path) -> None:
    """Add a bundle built and signed with `cjb image bundle` as release VERSION."""
    from cjb.gateway.control.updates import UpdateError

    with _store(state_dir) as store:
        try:
            rel = store.add_release(version, bundle)
        except UpdateError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"release {rel.version}: {rel.bundle} ({rel.size} bytes, sha256 {rel.sha256})")


@update.command("start")
@state_dir_option
@click.argument("version")
@click.option("--percent", type=click.IntRange(0, 100), default=0, help="Share of all devices.")
@click.option("--tenant", "tenants", multiple=True, help="Every device of this tenant (repeat).")
@click.option("--device", "devices", multiple=True, help="This serial (repeat).")
def start(
    state_dir: Path, version: str, percent: int, tenants: tuple[str, ...], devices: tuple[str, ...]
) -> None:
    """Offer VERSION to the selected devices (replaces the current roll-out); selections add
    up, and raising --percent later only adds devices."""
    from cjb.gateway.control.updates import Rollout, UpdateError

    with _store(state_dir) as store:
        try:
            r = store.start_rollout(
                Rollout(version, percent, frozenset(tenants), frozenset(devices))
            )
        except UpdateError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(
        f"roll-out of {r.version}: {r.percent}% of devices, tenants {sorted(r.tenants) or '-'}, "
        f"devices {sorted(r.devices) or '-'}"
    )


@update.command("status")
@state_dir_option
@click.option("--watch", is_flag=True, help="Print progress every 2 s until all are done.")
def status(state_dir: Path, watch: bool) -> None:
    """Progress of the current roll-out, then one line per selected device."""
    from cjb.gateway.control.updates import progress

    while True:
        with _store(state_dir) as store, _registry(state_dir) as reg:
            rollout = store.rollout()
            if rollout is None:
                click.echo("no roll-out")
                return
            devices = [(d.serial, d.tenant) for d in reg.devices() if d.state == "enrolled"]
            reports = store.reports()
        p = progress(rollout, devices, reports)
        click.echo(p.line())
        for serial, tenant in devices:
            if not rollout.selects(serial, tenant):
                continue
            r = reports.get(serial)
            state = r.state if r is not None and r.version == rollout.version else "pending"
            running = r.running if r is not None else "?"
            click.echo(f"  {serial:<24} {tenant or '-':<12} {state:<12} running {running}")
        if not watch or p.pending + p.by_state.get("offered", 0) == 0:
            return
        time.sleep(2)
