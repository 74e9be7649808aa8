"""`cjb lab …`: the whole system on one machine, in network namespaces."""

from __future__ import annotations

import sys

import click

from cjb.lab.control import DEFAULT_TRANSPORT, TRANSPORTS, LabError


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@click.group()
def lab() -> None:
    """The whole system on one machine, in network namespaces."""


transport_option = click.option(
    "--transport",
    type=click.Choice(TRANSPORTS),
    default=DEFAULT_TRANSPORT,
    show_default=True,
    help="wireguard: appliances enroll over HTTPS (gateway init, inventory import) and "
    "tunnel VXLAN inside WireGuard; vxlan: the static plain-VXLAN lab (fallback).",
)


@lab.command()
@click.option("--tenants", default=3, show_default=True, type=click.IntRange(1, 200))
@click.option("--same-mac", is_flag=True, help="Give every LAN client the same MAC too.")
@transport_option
def up(tenants: int, same_mac: bool, transport: str) -> None:
    """Build the lab: N sites, N appliances, internet, gateway, service host."""
    from cjb.lab.control import up as lab_up
    from cjb.lab.state import current

    existing = current()
    if existing is not None:
        raise click.ClickException(
            f"lab run {existing.run_id} is already up; run `cjb lab down` first"
        )
    try:
        lab_up(tenants, same_mac, log=click.echo, transport=transport)
    except LabError as exc:
        raise _fail(exc) from None


@lab.command()
def down() -> None:
    """Remove everything of every run (also after a crash) and check nothing remains."""
    from cjb.lab.control import down as lab_down

    remaining = lab_down(log=click.echo)
    if remaining:
        raise click.ClickException("still present after down: " + ", ".join(remaining))
    click.echo("lab is down: no namespace, link, nftables table or process of any run remains")


@lab.command()
def status() -> None:
    """What runs where."""
    from cjb.lab.status import render

    click.echo(render(), nl=False)


@lab.command(
    "exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.argument("node")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(node: str, argv: tuple[str, ...]) -> None:
    """Run CMD in NODE's namespace: cjb lab exec site1 -- ping 192.168.0.100"""
    from cjb.lab.control import exec_in
    from cjb.lab.state import current

    state = current()
    if state is None:
        raise click.ClickException("no lab is up: run `cjb lab up` first")
    args = list(argv[1:] if argv and argv[0] == "--" else argv)
    try:
        exec_in(state, node, args)
    except (LabError, OSError) as exc:
        raise _fail(exc) from None


@lab.command()
@click.option("--tenants", default=3, show_default=True, type=click.IntRange(1, 200))
@click.option("--same-mac", is_flag=True)
@transport_option
def demo(tenants: int, same_mac: bool, transport: str) -> None:
    """Fig. 7: each site (all 192.168.0.10) fetches its page via both paths; then
    discovery both ways (a site finds its cloud service, the service host its printer)."""
    from cjb.lab.control import up as lab_up
    from cjb.lab.demo import crossed, render, run_demo
    from cjb.lab.state import current

    state = current()
    try:
        if state is None:
            state = lab_up(tenants, same_mac, log=click.echo, transport=transport)
    except LabError as exc:
        raise _fail(exc) from None
    rows = run_demo(state)
    via = (
        "enrolled appliances, VXLAN inside WireGuard"
        if state.transport == "wireguard"
        else ("static appliances, plain VXLAN")
    )
    click.echo(f"lab {state.run_id}: {via}")
    click.echo(render(rows))
    bad = crossed(rows)
    ok = all(r.ok for r in rows)
    if state.transport == "wireguard":
        from cjb.lab import discovery

        off = discovery.wait_relays(state)
        for appliance, note in sorted(off.items()):
            click.echo(f"{appliance}: discovery relay {note}", err=True)
        found = discovery.run_discovery(state)
        click.echo(discovery.render(found))
        bad += discovery.crossed(found)
        ok = ok and all(r.ok for r in found)
    else:
        click.echo("\ndiscovery: needs the enrolled lab (--transport wireguard); skipped")
    if bad:
        click.echo("ISOLATION FAILURE: " + "; ".join(bad), err=True)
        sys.exit(2)
    if not ok:
        click.echo("some fetches or browses failed (see the tables)", err=True)
        sys.exit(1)
