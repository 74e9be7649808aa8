"""Named namespaces and `ip netns add` side by side: ours must stay removable.

`ip netns add` makes /run/netns a mount point of its own when it is not one yet; a namespace
we had mounted there before would then be mounted twice, the original hidden, and
`remove_netns` could not remove its name (`cjb lab down`: "Device or resource busy").

Runs in a private mount namespace with a fresh tmpfs on /run, so the machine's /run/netns
(and other people's namespaces in it) are never touched; everything dies with the child.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.root

CHILD = r"""
import os, subprocess, sys
from cjb.common.netlink.nsenter import create_netns, remove_netns
ours, theirs = sys.argv[1], sys.argv[2]
create_netns(ours)
subprocess.run(["ip", "netns", "add", theirs], check=True)
remove_netns(ours)
subprocess.run(["ip", "netns", "del", theirs], check=True)
with open("/proc/self/mountinfo") as f:
    mounted = [line for line in f if ours in line or theirs in line]
print(sorted(os.listdir("/run/netns")), len(mounted))
"""


def test_our_namespace_stays_removable_after_ip_netns_add() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: mount namespaces and network namespaces")
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs `{tool}` (apt-get install iproute2 util-linux)")
    run = secrets.token_hex(2)
    isolated = 'mount -t tmpfs cjbtest /run && exec "$0" "$@"'
    proc = subprocess.run(
        [
            "unshare", "--mount", "--propagation", "private", "sh", "-c", isolated,
            sys.executable, "-c", CHILD, f"cjbt{run}-ours", f"cjbt{run}-ip",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[0] == "[] 0"
