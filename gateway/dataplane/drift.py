"""When the gateway reconciles without a change in its desired state (drift repair).

A full reconcile reads every link, address, sysctl and tc filter of the gateway's two
namespaces; at 100 tenants that is ~1 s of CPU (more on a busy machine), holding the GIL
while the translator workers wait. Two rules keep drift repair cheap:
  - a link added or removed behind our back (the common drift: someone deletes a tenant's
    port) shows in `link_table`, one if_nameindex(3) per namespace, checked every second;
  - the full reconcile (stray WireGuard peers, nftables, MTUs, addresses...) runs every
    RESYNC_INTERVAL, stretched so that it takes at most DRIFT_CPU_SHARE of a core, up to
    RESYNC_MAX.
"""

from __future__ import annotations

import socket

from cjb.common.netlink import netns

RESYNC_INTERVAL = 10.0  # seconds between full reconciles, at least
RESYNC_MAX = 60.0  # and at most: drift that is not a link (a stray peer) waits this long
DRIFT_CPU_SHARE = 0.05  # of one core, spent on full reconciles that found nothing to do

LinkTable = frozenset[tuple[str, int, str]]


def resync_interval(last_reconcile_seconds: float) -> float:
    """Seconds until the next full reconcile, given how long the last one that changed
    nothing took."""
    return min(RESYNC_MAX, max(RESYNC_INTERVAL, last_reconcile_seconds / DRIFT_CPU_SHARE))


def link_table(namespaces: tuple[str | None, ...]) -> LinkTable:
    """(namespace, ifindex, name) of every link in `namespaces` (None: this one).

    if_nameindex(3) lists names and indexes only, in C: microseconds for hundreds of links,
    where a pyroute2 dump decodes every attribute of every link. A recreated link gets a
    new index, so it shows too. Raises NetlinkError when a namespace is gone.
    """
    found: set[tuple[str, int, str]] = set()
    for ns in namespaces:
        with netns(ns):  # if_nameindex opens its socket in this thread's namespace
            found.update((ns or "", index, name) for index, name in socket.if_nameindex())
    return frozenset(found)
