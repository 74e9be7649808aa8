"""The appliance's cheap drift check (common/netlink/drift.py) in a namespace of its own:
it moves when a link is removed, re-created, set down or detached from its bridge, and when
an nftables table is added, flushed or deleted; it stays put when nothing changes."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator

import pytest

from cjb.common.netlink.drift import DriftProbe
from cjb.common.netlink.nsenter import netns

pytestmark = pytest.mark.root


@pytest.fixture
def ns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a network namespace, links and nftables tables")
    name = f"cjbdrift{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def _in(ns: str, *argv: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, *argv], check=True)


def test_the_fingerprint_moves_with_links_and_nftables_and_only_then(ns: str) -> None:
    _in(ns, "ip", "link", "add", "br0", "type", "bridge")
    _in(ns, "ip", "link", "add", "p0", "type", "veth", "peer", "name", "p1")
    _in(ns, "ip", "link", "set", "p0", "master", "br0", "up")
    _in(ns, "nft", "add", "table", "inet", "cjbt")
    with netns(ns):
        probe = DriftProbe()
    try:
        base = probe.fingerprint()
        assert probe.fingerprint() == base  # nothing changed: nothing moves
        names = {name for _i, name, _up, _m in base[0]}
        assert {"lo", "br0", "p0", "p1"} <= names
        changes = [
            ("ip", "link", "set", "p0", "nomaster"),  # detached from the bridge
            ("ip", "link", "set", "p0", "down"),
            ("ip", "link", "del", "p1"),  # removes p0 as well
            ("nft", "flush", "ruleset"),
            ("nft", "add", "table", "inet", "cjbt"),
        ]
        seen = base
        for argv in changes:
            _in(ns, *argv)
            now = probe.fingerprint()
            assert now != seen, f"{' '.join(argv)} did not move the fingerprint"
            seen = now
        started = time.process_time()
        for _ in range(200):
            probe.fingerprint()
        per_check = (time.process_time() - started) / 200
        print(f"drift check: {per_check * 1e6:.0f} us CPU")
        assert per_check < 0.002  # the whole idle budget of a second, as an upper bound
    finally:
        probe.close()
