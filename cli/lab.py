"""`cjb lab …`: the whole system on one machine, in network namespaces."""

from __future__ import annotations

import re
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
    "tunnel VXLAN inside WireGuard; vxlan: the static plain-VXLAN lab, a trusted-link "
    "mode that a source-forging sender can inject into (docs/transport-modes.md).",
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
            f"lab run {existing.run_id} is already up; run `cjb lab down {existing.run_id}` first"
        )
    try:
        lab_up(tenants, same_mac, log=click.echo, transport=transport)
    except LabError as exc:
        raise _fail(exc) from None


RUN_ID_LENGTH = 4  # secrets.token_hex(2), as `cjb lab up` and `cjb lab status` show it


def _runs_present() -> list[str]:
    """Run ids on this machine: recorded runs and namespaces of runs that left no record."""
    from cjb.lab.control import lab_namespaces
    from cjb.lab.state import runs
    from cjb.lab.topology import PREFIX

    ids = {s.run_id for s in runs()}
    ids |= {n.removeprefix(PREFIX)[:RUN_ID_LENGTH] for n in lab_namespaces()}
    return sorted(ids)


@lab.command()
@click.argument("run_id", required=False)
@click.option(
    "--all", "everything", is_flag=True, help="Remove every lab run on the machine, anyone's."
)
def down(run_id: str | None, everything: bool) -> None:
    """Remove lab run RUN_ID (see `cjb lab status`), or every run with --all.

    Processes, namespaces (and with them links and nftables tables) and WireGuard sockets go;
    then it checks nothing of them remains. Several engineers may run labs on one machine, so
    with neither RUN_ID nor --all it removes a run only when it is the only one there (and
    says which); with several it removes nothing and lists them. A RUN_ID with nothing left
    on the machine is not an error: down is safe to repeat.
    """
    from cjb.lab.control import down as lab_down

    if run_id is not None and everything:
        raise click.UsageError("give RUN_ID or --all, not both")
    if run_id is not None and not re.fullmatch(f"[0-9a-f]{{{RUN_ID_LENGTH}}}", run_id):
        raise click.UsageError(
            f"RUN_ID {run_id!r} is not a lab run id: {RUN_ID_LENGTH} hex digits, "
            "as `cjb lab status` shows (run 1a2b: ...)"
        )
    if everything:
        remaining = lab_down(log=click.echo, only=None)
        if remaining:
            raise click.ClickException("still present after down: " + ", ".join(remaining))
        click.echo("lab is down: no namespace, link, nftables table or process of any run remains")
        return
    present = _runs_present()
    if run_id is None:
        if not present:
            click.echo(
                "no lab run on this machine: nothing to remove "
                "(`cjb lab down --all` also sweeps leftovers of crashed runs)"
            )
            return
        if len(present) > 1:
            raise click.UsageError(
                f"{len(present)} lab runs on this machine ({', '.join(present)}): name the one "
                "to remove, `cjb lab down RUN_ID`, or remove them all with `cjb lab down --all`"
            )
        run_id = present[0]
        click.echo(f"removing lab run {run_id}, the only run on this machine")
    elif run_id not in present:
        others = ", ".join(present) or "none"
        click.echo(f"no lab run {run_id} on this machine (runs present: {others})")
    remaining = lab_down(log=click.echo, only=run_id)
    if remaining:
        raise click.ClickException("still present after down: " + ", ".join(remaining))
    click.echo(f"lab run {run_id} is down: no namespace, link, nftables table or process remains")


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


@lab.command(short_help="Every site curls the service by both paths (the paper's Fig. 7).")
@click.option("--tenants", default=3, show_default=True, type=click.IntRange(1, 200))
@click.option("--same-mac", is_flag=True)
@transport_option
def demo(tenants: int, same_mac: bool, transport: str) -> None:
    """Run the paper's Fig. 7 on the lab (up if needed): every site curls both paths.

    Every site (all at 192.168.0.10) runs `curl http://192.168.0.100:80/` (translated path)
    and `curl -g 'http://[fe80::192.168.0.100%eth0]:80/'` (native IPv6 path); the table shows
    each answer's page and the service host's interface that answered. Then discovery both
    ways (a site finds its cloud service, the service host its printer). Exit 2 if any site
    got another tenant's answer, 1 if a fetch or browse failed."""
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
