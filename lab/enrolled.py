"""The lab's real path: a gateway that enrolls its appliances over HTTPS.

`cjb lab up` (transport "wireguard") does what an operator and a factory do, with the
product's own commands:
  1. `cjb gateway init` -> api/ (CA, HTTPS certificate with SAN = the gateway's lab address,
     settings, an empty registry, one operator credential), dataplane/ (WireGuard private key)
     and export/ (WireGuard public key, the data plane's export of the registry);
  2. personalise N virtual appliances: serial + Ed25519 factory key written into an
     ApplianceLayout root per appliance (what flashing does), plus the operator CA and the
     gateway URL that the image would carry;
  3. `cjb gateway device import` of their inventory records (tenant K for appliance K);
  4. start `cjb gateway serve` (HTTPS API; as its own unprivileged user, see LAB_API_UID)
     and `cjb gateway run` (data plane, desired state = the API's export) in the gateway
     namespace, and one `cjb appliance run` per appliance
     namespace; each enrolls across the lab internet and brings up WireGuard + VXLAN.
Nothing is configured by hand between these steps.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from cjb.common.control.identity import ApplianceLayout
from cjb.common.control.protocol import InventoryRecord
from cjb.common.private_file import atomic_write
from cjb.lab.topology import (
    API_PORT,
    GATEWAY_UNDERLAY,
    LAN_ADDRESS,
    LAN_MTU,
    WIREGUARD_PORT,
    LabNames,
    tenant_name,
)

GATEWAY_URL = f"https://[{GATEWAY_UNDERLAY}]:{API_PORT}"
WIREGUARD_ENDPOINT = f"[{GATEWAY_UNDERLAY}]:{WIREGUARD_PORT}"


class EnrollSetupError(Exception):
    """A set-up step of the enrolled lab failed; the message carries the command's output."""


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cjb.cli", *args]


def _run(argv: list[str], what: str, stdin: str | None = None) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise EnrollSetupError(f"{what} failed ({' '.join(argv[3:6])}): {proc.stderr.strip()}")
    return proc.stdout


def gateway_state_dir(run_dir: Path) -> Path:
    return run_dir / "gateway-state"


def appliance_root(run_dir: Path, k: int) -> Path:
    return run_dir / f"appliance{k}" / "root"


def serial(names: LabNames, k: int) -> str:
    return f"LAB-{names.run_id}-{k:03d}"


# The lab runs `cjb gateway serve` as this uid (no passwd entry needed: setpriv), owning
# api/, so the API cannot read dataplane/ (the WireGuard private key) there either. The data
# plane stays root in the lab: it also enters the service namespace (CAP_SYS_ADMIN); the
# systemd units run it as its own user (gateway/systemd/).
LAB_API_UID = 49_152


def api_uid() -> int | None:
    """LAB_API_UID when we are root and no account uses it (else the API runs as we do)."""
    import os
    import pwd

    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwuid(LAB_API_UID)
    except KeyError:
        return LAB_API_UID
    return None


def api_argv(argv: list[str]) -> list[str]:
    """`argv` run as the lab's API user (setpriv: no new privileges, no groups)."""
    uid = api_uid()
    if uid is None:
        return argv
    return [
        "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs",
        *argv,
    ]  # fmt: skip


def operator_token_file(run_dir: Path) -> Path:
    """The lab operator's token (0600), as `cjb gateway init --operator lab` printed it."""
    return run_dir / "operator.token"


def init_gateway(run_dir: Path) -> Path:
    state = gateway_state_dir(run_dir)
    out = _run(
        cli(
            "gateway", "init", "--state-dir", str(state),
            "--san", str(GATEWAY_UNDERLAY), "--san", "localhost", "--san", "127.0.0.1",
            "--endpoint", WIREGUARD_ENDPOINT, "--port", str(API_PORT), "--operator", "lab",
            *(["--api-user", str(api_uid()), "--dataplane-user", "0"] if api_uid() else []),
        ),
        "cjb gateway init",
    )  # fmt: skip
    atomic_write(operator_token_file(run_dir), out.strip().splitlines()[-1] + "\n")
    return state


def personalise(names: LabNames, run_dir: Path, k: int) -> InventoryRecord:
    """What flashing a unit does: its serial and factory key (0600), plus the image's
    operator CA and gateway URL. Returns the record the operator imports."""
    from cjb.appliance.keys import b64, write_factory

    layout = ApplianceLayout(appliance_root(run_dir, k))
    key = ed25519.Ed25519PrivateKey.generate()
    write_factory(layout, serial(names, k), key)
    from cjb.gateway.control.statedir import StateDir

    ca = StateDir(gateway_state_dir(run_dir)).ca_cert
    layout.operator_ca.write_bytes(ca.read_bytes())
    layout.gateway_url.write_text(GATEWAY_URL + "\n")
    public = key.public_key().public_bytes_raw()
    return InventoryRecord(
        serial=serial(names, k), factory_public_key=b64(public), tenant=tenant_name(k)
    )


def import_inventory(run_dir: Path, records: list[InventoryRecord]) -> None:
    path = run_dir / "inventory.jsonl"
    path.write_text("".join(r.model_dump_json() + "\n" for r in records))
    _run(
        cli(
            "gateway", "device", "import", "--state-dir", str(gateway_state_dir(run_dir)), str(path)
        ),
        "cjb gateway device import",
    )


def gateway_config(names: LabNames, run_dir: Path) -> dict[str, object]:
    """The data plane: tenants come from the registry; VXLAN runs inside WireGuard."""
    from cjb.gateway.control.settings import load_settings
    from cjb.gateway.control.statedir import StateDir

    layout = StateDir(gateway_state_dir(run_dir))
    settings = load_settings(layout.settings)  # one truth for overlay and port: gateway.toml
    overlay = f"{settings.overlay.gateway}/{settings.overlay.prefix.prefixlen}"
    return {
        "wireguard": {
            "ifname": names.wg_ifname("gateway"),
            "private_key_file": str(layout.wg_private),
            "listen_port": settings.wireguard.listen_port,
            "address": overlay,
            "mtu": settings.wireguard.mtu,
            "log_file": str(run_dir / "logs" / "gateway-wireguard.log"),
        },
        # The API's read-only export: the data plane never opens the registry itself.
        "registry": {"path": str(layout.desired), "native_ipv6": True},
        # The API is the only TCP service the lab's gateway offers (no SSH in a namespace).
        "host_input": {"tcp_ports": [API_PORT]},
        "service_netns": names.ns("service"),
        "state_dir": str(run_dir / "gateway"),
        "directory_file": str(run_dir / "tenants.json"),
        "tenants": {},
    }


# The lab runs every appliance on one machine: each agent's repair tick (re-apply its
# kernel spec, read WireGuard and the port) costs ~20-35 ms of CPU here, so 100 agents
# ticking every second need more than this 2-core machine has, and starve the gateway's
# own netlink work (one RTNL lock for all namespaces). Pace the ticks so that the whole lab
# does about this many per second; a board on its own keeps the default 1 s.
LAB_TICKS_PER_SECOND = 15.0


def check_interval(tenants: int) -> float:
    """The agents' repair tick in a lab of `tenants` appliances: 1 s up to 15, then longer."""
    return max(1.0, round(tenants / LAB_TICKS_PER_SECOND, 1))


def appliance_config(run_dir: Path, k: int, tenants: int = 1) -> dict[str, object]:
    return {
        "root": str(appliance_root(run_dir, k)),
        "bridge": "br-lan",
        "lan_ports": ["lan0"],
        "wan": "wan0",
        "tunnel_builder": "wireguard",
        "tunnel_port": "cjb-vx0",
        "lan_mtu": LAN_MTU,
        # The agent's bridge has no address of its own on the customer LAN: tell it the LAN.
        "lan_prefix": str(LAN_ADDRESS.network),
        "arp_probe_scale": 0.1,  # RFC 5227 timings / 10: the lab LAN is one veth
        "state_dir": str(run_dir / f"appliance{k}"),
        "check_interval": check_interval(tenants),
        "backoff_cap": 5.0,
    }


def write_configs(names: LabNames, tenants: int, run_dir: Path) -> dict[str, Path]:
    """Everything before the processes start: init, personalise, import, config files."""
    init_gateway(run_dir)
    records = [personalise(names, run_dir, k) for k in range(1, tenants + 1)]
    import_inventory(run_dir, records)
    paths: dict[str, Path] = {}
    gw = run_dir / "gateway.json"
    gw.write_text(json.dumps(gateway_config(names, run_dir), indent=2) + "\n")
    paths["gateway"] = gw
    for k in range(1, tenants + 1):
        path = run_dir / f"appliance{k}.json"
        path.write_text(json.dumps(appliance_config(run_dir, k, tenants), indent=2) + "\n")
        paths[f"appliance{k}"] = path
    return paths


def enrollment_times(run_dir: Path, started: float) -> dict[str, float]:
    """Serial -> seconds from the agents' start (wall clock) to the gateway's record of the
    enrollment: nonce, signed request, CSR, allocation, certificate (ARP probing included)."""
    from cjb.gateway.control.registry import Registry
    from cjb.gateway.control.statedir import StateDir

    with Registry.open(StateDir(gateway_state_dir(run_dir)).registry) as reg:
        return {
            d.serial: d.enrolled_at - started for d in reg.devices() if d.enrolled_at is not None
        }


def summary(times: dict[str, float]) -> str:
    """Each serial's time for a few appliances; first, median and last for many."""
    if len(times) <= 10:
        return ", ".join(f"{serial} {t:.1f}s" for serial, t in sorted(times.items()))
    ordered = sorted(times.values())
    median = ordered[len(ordered) // 2]
    return (
        f"{len(ordered)} appliances, first {ordered[0]:.1f}s, median {median:.1f}s, "
        f"last {ordered[-1]:.1f}s"
    )
