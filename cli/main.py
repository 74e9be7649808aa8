"""The `cjb` command: one entry point, subcommand groups loaded on first use.

Groups are imported lazily so that `cjb xlat` on an appliance does not pull in
gateway-only dependencies, and `cjb --help` stays fast.
"""

from __future__ import annotations

import importlib

import click

# name -> (module, attribute, one-line help)
GROUPS: dict[str, tuple[str, str, str]] = {
    "xlat": ("cjb.cli.xlat", "xlat", "Translate a pcap offline (IPv4/ARP <-> fe80::/96 IPv6/NDP)."),
    "gateway": (
        "cjb.cli.gateway",
        "gateway",
        "Gateway: init, device inventory, HTTPS API, data plane, status.",
    ),
    "appliance": ("cjb.cli.appliance", "appliance", "Appliance agent."),
    "service": (
        "cjb.cli.service",
        "service",
        "Service-host tools: the multi-tenant reference app.",
    ),
    "image": (
        "cjb.cli.image",
        "image",
        "Build, personalise and flash the appliance firmware image.",
    ),
    "lab": ("cjb.cli.lab", "lab", "The whole system on one machine, in network namespaces."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(GROUPS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = GROUPS.get(cmd_name)
        if entry is None:
            return None
        module_name, attr, _ = entry
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Describe groups from the table, without importing them.
        rows = [(name, GROUPS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cjb")
def main() -> None:
    """CJB — Cloud Junction Box.

    Joins customer LANs (overlapping private IPv4) to one cloud service host by
    translating each tenant's IPv4 into IPv6 link-local addresses on a per-tenant link.
    """
