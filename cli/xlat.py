"""`cjb xlat`: the offline translator (pcap in, translated pcap out) and its sample capture.

    cjb xlat IN.pcap OUT.pcap [OPTIONS]     translate a capture (the stable interface)
    cjb xlat run IN.pcap OUT.pcap [OPTIONS] the same, spelled out
    cjb xlat sample OUT.pcap                write the sample LAN conversation

`xlat` is a group whose first argument falls through to `run` when it is not a subcommand
name, so the issue's `cjb xlat IN OUT` form and the `sample` subcommand live side by side.
(An input file literally named `sample` needs `cjb xlat run sample OUT` or `./sample`.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from cjb.common.tunnel_mtu import service_mtu_for

EXIT_CORE_FAILURE = 3

_DIRECTIONS = ("auto", "to-service", "to-lan")
_CONFIG_OPTION_NAMES = {
    "lowest_ipv6_mtu": "--lowest-ipv6-mtu",
    "service_mtu": "--service-mtu",
    "lan_mtu": "--lan-mtu",
}


class _DefaultRunGroup(click.Group):
    """A group that treats `cjb xlat IN OUT ...` as `cjb xlat run IN OUT ...`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["run", *args]
        return super().parse_args(ctx, args)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Show the default command's usage and options first: that is what people call.
        run_ctx = click.Context(run, info_name=ctx.info_name, parent=ctx.parent)
        run.format_help(run_ctx, formatter)
        with formatter.section("Other forms"):
            formatter.write_dl(
                [
                    (f"{ctx.command_path} run IN.pcap OUT.pcap", "the same as above, spelled out"),
                    (f"{ctx.command_path} sample OUT.pcap", sample.get_short_help_str(60)),
                ]
            )


@click.group(cls=_DefaultRunGroup, no_args_is_help=True)
def xlat() -> None:
    """Translate a pcap offline (IPv4/ARP <-> fe80::/96 IPv6/NDP)."""


@xlat.command(no_args_is_help=True)
@click.argument(
    "src", metavar="IN.pcap", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.argument("dst", metavar="OUT.pcap", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--direction",
    type=click.Choice(_DIRECTIONS),
    default="auto",
    show_default=True,
    help="auto: IPv4, ARP and anything else go to-service, IPv6 goes to-lan.",
)
@click.option("--lan-mtu", type=int, default=1500, show_default=True, help="LAN-side MTU.")
@click.option(
    "--service-mtu", type=int, default=None, help="Service-link MTU  [default: LAN MTU + 20]."
)
@click.option(
    "--lowest-ipv6-mtu",
    type=int,
    default=None,
    help="DF=0 packets that would exceed it are fragmented (RFC 7915 §4.1)"
    "  [default: the service MTU].",
)
@click.option(
    "--udp-zero-checksum",
    type=click.Choice(("compute", "drop")),
    default="compute",
    show_default=True,
    help="IPv4 UDP datagrams without a checksum: compute one, or drop (RFC 7915 §4.5).",
)
@click.option(
    "--errors-to",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write frames that go back the way they came (ICMP errors) here instead of OUT.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def run(
    src: Path,
    dst: Path,
    direction: str,
    lan_mtu: int,
    service_mtu: int | None,
    lowest_ipv6_mtu: int | None,
    udp_zero_checksum: str,
    errors_to: Path | None,
    as_json: bool,
) -> None:
    """Translate every frame of IN.pcap, in order, and write what the translator emits to OUT.pcap.

    IN.pcap is a classic pcap (also gzipped) of link type 1 (Ethernet) or raw IP: 101, 228
    (IPv4) or 229 (IPv6). Frames emitted on both sides (translated frames, and ICMP errors
    going back to the sender) go to OUT.pcap in the order the translator returns them,
    each with the timestamp of the frame it came from; use --errors-to to split the ones
    going back. OUT.pcap has IN's link type, except that 228 and 229 become 101, since a
    translated packet changes IP version.

    Raw-IP packets are fed to the translator inside a synthetic Ethernet header whose MACs
    are 02:00 + the low 32 bits of the IP address (multicast and 255.255.255.255 get their
    group MACs), and leave without it. ARP that the translator emits cannot be written to
    raw IP; it is counted as not representable.

    The translator is part of one link, not a router: TTL and hop limit are not decremented.
    Prints a summary: frames in, frames out by side, drops by reason. Exit status: 0 when
    the run completed (drops are normal), 1 for unreadable or unwritable files, 2 for bad
    options, 3 if the translator raised (a bug; the summary still prints).
    """
    # Imported here, not at the top: scapy takes a second to import, and `--help` should not.
    from cjb.gateway.xlat import ConfigError, UdpZeroChecksum, XlatConfig
    from cjb.gateway.xlat.offline import CaptureError, DirectionMode, translate_capture
    from cjb.gateway.xlat.offline.report import render_table, summary_dict
    from cjb.gateway.xlat.offline.runner import PROGRESS_EVERY

    try:
        config = XlatConfig(
            lan_mtu=lan_mtu,
            service_mtu=service_mtu if service_mtu is not None else service_mtu_for(lan_mtu),
            lowest_ipv6_mtu=lowest_ipv6_mtu,
            udp_zero_checksum=UdpZeroChecksum(udp_zero_checksum),
        )
    except ConfigError as exc:
        message = str(exc)
        for name, option in _CONFIG_OPTION_NAMES.items():
            message = message.replace(name, option)
        raise click.UsageError(message) from None

    show_progress = sys.stderr.isatty()

    def progress(count: int) -> None:
        click.echo(f"\r{count} frames…", nl=False, err=True)

    try:
        summary = translate_capture(
            src,
            dst,
            mode=DirectionMode(direction),
            config=config,
            errors_to=errors_to,
            progress=progress if show_progress else None,
        )
    except CaptureError as exc:
        raise click.ClickException(str(exc)) from None
    if show_progress and summary.records_in >= PROGRESS_EVERY:
        click.echo("", err=True)  # end the progress line

    if as_json:
        click.echo(json.dumps(summary_dict(summary), indent=2))
    else:
        click.echo(f"{src} -> {dst}")
        click.echo(render_table(summary))
    if summary.core_failures:
        for failure in summary.first_failures:
            click.echo(f"frame #{failure.index}: translator raised {failure.error}", err=True)
        click.echo(
            f"Error: the translator raised on {summary.core_failures} frame(s); "
            "those frames are missing from the output",
            err=True,
        )
        sys.exit(EXIT_CORE_FAILURE)


@xlat.command(
    no_args_is_help=True, short_help="Write the sample capture (a small LAN conversation)."
)
@click.argument("dst", metavar="OUT.pcap", type=click.Path(dir_okay=False, path_type=Path))
def sample(dst: Path) -> None:
    """Write the sample capture: one LAN client and the service, both directions.

    ARP <-> NDP, ICMP echo, a TCP handshake with data, UDP with and without a checksum, an
    IPv4 fragment pair, an oversized DF=1 packet, mDNS, a broadcast and a malformed frame,
    as an Ethernet pcap. Try: cjb xlat sample s.pcap && cjb xlat s.pcap out.pcap
    """
    from cjb.gateway.xlat.offline import CaptureError
    from cjb.gateway.xlat.offline.samples import write_sample

    try:
        count = write_sample(dst)
    except CaptureError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {count} frames to {dst}")
