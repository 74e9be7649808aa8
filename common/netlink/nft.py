"""nftables tables as data, applied atomically with `nft -f -` inside a namespace.

Why text and not pyroute2's nftables module: pyroute2 exposes raw netlink expressions with
no ruleset compiler, while `nft -f` parses the documented syntax, applies one file as one
transaction, and the generated text is what tests compare and operators read.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass

from cjb.common.netlink.kernel import NetlinkError
from cjb.common.netlink.nsenter import netns

# The ICMPv6 a host's input policy must admit (RFC 4890 §4.4.1): errors, Path MTU discovery
# (packet-too-big) and Neighbor Discovery.
HOST_ICMPV6_TYPES = (
    "destination-unreachable",
    "packet-too-big",
    "time-exceeded",
    "parameter-problem",
    "nd-router-advert",
    "nd-neighbor-solicit",
    "nd-neighbor-advert",
)


def named_counter(name: str, previous: dict[str, tuple[int, int]]) -> str:
    """A named counter's declaration, starting from its `previous` (packets, bytes): each
    apply replaces the whole table, so the counts are carried over by hand."""
    packets, nbytes = previous.get(name, (0, 0))
    return f"\tcounter {name} {{ packets {packets} bytes {nbytes} }}"


@dataclass(frozen=True, slots=True)
class NftTable:
    family: str  # "inet", "ip6", "bridge", "netdev"
    name: str
    body: str  # the table's contents: counters, chains, rules

    def script(self) -> str:
        """Replace the table atomically: create-if-missing, delete, recreate, one transaction."""
        return (
            f"table {self.family} {self.name}\n"
            f"delete table {self.family} {self.name}\n"
            f"table {self.family} {self.name} {{\n{self.body}\n}}\n"
        )


def _nft(ns: str | None, args: list[str], stdin: str | None = None) -> str:
    binary = shutil.which("nft")
    if binary is None:
        raise NetlinkError("nft not found: apt-get install -y --no-install-recommends nftables")
    with netns(ns):
        proc = subprocess.run(
            [binary, *args], input=stdin, capture_output=True, text=True, check=False
        )
    if proc.returncode != 0:
        raise NetlinkError(
            f"{ns or '(current netns)'}: nft {' '.join(args)}: {proc.stderr.strip()}"
        )
    return proc.stdout


def apply_table(ns: str | None, table: NftTable) -> None:
    _nft(ns, ["-f", "-"], table.script())


def delete_table(ns: str | None, family: str, name: str) -> None:
    if name in tables(ns, family):
        _nft(ns, ["delete", "table", family, name])


def tables(ns: str | None, family: str | None = None) -> set[str]:
    out = json.loads(_nft(ns, ["-j", "list", "tables"]))
    return {
        item["table"]["name"]
        for item in out.get("nftables", [])
        if "table" in item and (family is None or item["table"]["family"] == family)
    }


def counters(ns: str | None, family: str, table: str) -> dict[str, tuple[int, int]]:
    """Named counters of one table: name -> (packets, bytes)."""
    out = json.loads(_nft(ns, ["-j", "list", "counters", "table", family, table]))
    result: dict[str, tuple[int, int]] = {}
    for item in out.get("nftables", []):
        counter = item.get("counter")
        if counter is not None:
            result[counter["name"]] = (int(counter["packets"]), int(counter["bytes"]))
    return result
