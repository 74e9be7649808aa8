"""The sans-IO parts of cjb.common.wireguard: UAPI text both ways, the plan, `wg` forms."""

from __future__ import annotations

import base64
import ipaddress
from pathlib import Path

import pytest

from cjb.common.wireguard import DeviceSpec, DeviceStatus, PeerSpec, PeerStatus, WireGuardError
from cjb.common.wireguard.kernel import KernelBackend, parse_dump, wg_set_argv
from cjb.common.wireguard.keys import b64_to_hex, hex_to_b64, public_key
from cjb.common.wireguard.model import Endpoint
from cjb.common.wireguard.plan import PeerOp, SetRequest, plan
from cjb.common.wireguard.uapi import parse_get, render_set

# RFC 7748 §6.1 X25519 test vector (Alice): private key and public key.
ALICE_PRIV = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUB = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
PRIV = base64.b64encode(ALICE_PRIV).decode()
PUB = base64.b64encode(ALICE_PUB).decode()
PEER1 = base64.b64encode(bytes(range(32))).decode()
PEER2 = base64.b64encode(bytes(range(1, 33))).decode()
N = ipaddress.ip_network


def test_public_key_matches_rfc7748_vector() -> None:
    assert public_key(PRIV) == PUB


def test_key_forms_round_trip_and_reject_bad_input() -> None:
    assert hex_to_b64(b64_to_hex(PUB)) == PUB
    with pytest.raises(WireGuardError, match="not base64"):
        b64_to_hex("not a key!")
    with pytest.raises(WireGuardError, match="16 bytes"):
        b64_to_hex(base64.b64encode(b"x" * 16).decode())


def test_render_set_add_update_remove() -> None:
    request = SetRequest(
        private_key=PRIV,
        listen_port=51820,
        peers=(
            PeerOp(PEER1, remove=True),
            PeerOp(
                PEER2,
                allowed_ips=(N("fd63:6a62:77::100/128"),),
                endpoint=Endpoint(ipaddress.ip_address("fd63:6a62::2"), 51820),
                keepalive=25,
            ),
        ),
    )
    assert render_set(request).decode() == (
        "set=1\n"
        f"private_key={ALICE_PRIV.hex()}\n"
        "listen_port=51820\n"
        f"public_key={bytes(range(32)).hex()}\n"
        "remove=true\n"
        f"public_key={bytes(range(1, 33)).hex()}\n"
        "endpoint=[fd63:6a62::2]:51820\n"
        "persistent_keepalive_interval=25\n"
        "replace_allowed_ips=true\n"
        "allowed_ip=fd63:6a62:77::100/128\n"
        "\n"
    )
    assert PRIV not in repr(request)


def test_parse_get_reads_peers_handshake_and_counters() -> None:
    text = (
        f"private_key={ALICE_PRIV.hex()}\n"
        "listen_port=51820\n"
        f"public_key={bytes(range(32)).hex()}\n"
        "preshared_key=" + "0" * 64 + "\n"
        "protocol_version=1\n"
        "endpoint=[fd63:6a62:1::2]:41234\n"
        "last_handshake_time_sec=1700000000\n"
        "last_handshake_time_nsec=500000000\n"
        "tx_bytes=1184\n"
        "rx_bytes=920\n"
        "persistent_keepalive_interval=25\n"
        "allowed_ip=fd63:6a62:77::100/128\n"
        f"public_key={bytes(range(1, 33)).hex()}\n"
        "last_handshake_time_sec=0\n"
        "last_handshake_time_nsec=0\n"
        "allowed_ip=10.0.0.0/8\n"
        "allowed_ip=fd00::/64\n"
        "errno=0\n\n"
    )
    status = parse_get(text)
    assert status.private_key == PRIV and status.listen_port == 51820
    p1, p2 = status.peers
    assert p1 == PeerStatus(
        PEER1,
        (N("fd63:6a62:77::100/128"),),
        Endpoint(ipaddress.ip_address("fd63:6a62:1::2"), 41234),
        25,
        1700000000.5,
        920,
        1184,
    )
    assert p2.last_handshake is None and p2.allowed_ips == (N("10.0.0.0/8"), N("fd00::/64"))
    assert PRIV not in repr(status)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("listen_port=1\n", "without errno"),
        ("errno=2\n\n", "errno 2"),
        ("public_key=zz\nerrno=0\n\n", "not hex"),
    ],
)
def test_parse_get_errors(text: str, match: str) -> None:
    with pytest.raises(WireGuardError, match=match):
        parse_get(text)


def _peer(key: str, *ips: str, **kw: object) -> PeerSpec:
    return PeerSpec(key, tuple(N(i) for i in ips), **kw)  # type: ignore[arg-type]


def test_plan_is_empty_when_matching_and_minimal_otherwise() -> None:
    desired = DeviceSpec(PRIV, 51820, (_peer(PEER1, "fd63:6a62:77::100/128"),))
    observed = DeviceStatus(
        PRIV,
        51820,
        (
            PeerStatus(
                PEER1,
                (N("fd63:6a62:77::100/128"),),
                Endpoint(ipaddress.ip_address("fd63:6a62:1::2"), 4000),  # roamed: kept
            ),
        ),
    )
    request, changes = plan(desired, observed)
    assert request.empty and changes == []

    # New key, a new peer, one to remove, one with changed allowed IPs.
    observed = DeviceStatus(
        None,
        0,
        (PeerStatus(PEER1, (N("fd63:6a62:77::101/128"),)), PeerStatus(PUB, ())),
    )
    desired = DeviceSpec(
        PRIV, 51820, (_peer(PEER1, "fd63:6a62:77::100/128"), _peer(PEER2, "fd63:6a62:77::102/128"))
    )
    request, changes = plan(desired, observed)
    assert request.private_key == PRIV and request.listen_port == 51820
    assert request.peers == (
        PeerOp(PUB, remove=True),
        PeerOp(PEER1, allowed_ips=(N("fd63:6a62:77::100/128"),)),
        PeerOp(PEER2, allowed_ips=(N("fd63:6a62:77::102/128"),), endpoint=None, keepalive=0),
    )
    assert changes == [
        "set private key",
        "set listen port 51820",
        f"remove peer {PUB[:8]}…",
        f"update peer {PEER1[:8]}… allowed-ips",
        f"add peer {PEER2[:8]}… allowed-ips fd63:6a62:77::102/128",
    ]
    assert all(PRIV not in c for c in changes)


def test_wg_set_argv_keeps_private_key_on_stdin() -> None:
    argv, stdin = wg_set_argv(
        "wg0",
        SetRequest(PRIV, None, (PeerOp(PEER1, allowed_ips=(N("fd00::1/128"),), keepalive=0),)),
    )
    assert argv == [
        "set", "wg0", "private-key", "/dev/stdin", "peer", PEER1,
        "persistent-keepalive", "off", "allowed-ips", "fd00::1/128",
    ]  # fmt: skip
    assert stdin == PRIV.encode() + b"\n"
    assert PRIV not in " ".join(argv)


def test_parse_wg_show_dump() -> None:
    text = (
        f"{PRIV}\t{PUB}\t51820\toff\n"
        f"{PEER1}\t(none)\t[fd00::2]:51820\tfd63:6a62:77::100/128\t1700000000\t10\t20\t25\n"
        f"{PEER2}\t(none)\t(none)\t(none)\t0\t0\t0\toff\n"
    )
    status = parse_dump(text)
    assert status.listen_port == 51820 and status.private_key == PRIV
    assert status.peers[0].endpoint == Endpoint(ipaddress.ip_address("fd00::2"), 51820)
    assert status.peers[0].last_handshake == 1700000000 and status.peers[0].rx_bytes == 10
    assert status.peers[1] == PeerStatus(PEER2)


@pytest.mark.parametrize("text", ["fd00::1", "[fd00::1]:x", "host.example:51820", "1.2.3.4:70000"])
def test_endpoint_parse_rejects(text: str) -> None:
    with pytest.raises(WireGuardError):
        Endpoint.parse(text)


def test_kernel_backend_drives_wg_with_the_key_on_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel-module backend against a stand-in `wg` (no module on this machine): the
    private key reaches `wg` on stdin only, and `wg show dump` is read back."""
    base = tmp_path
    fake = base / "wg"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {base}/argv\n'
        f"cat >> {base}/stdin\n"
        f'if [ "$1" = show ]; then printf "{PRIV}\\t{PUB}\\t51820\\toff\\n"; fi\n'
    )
    fake.chmod(0o755)
    monkeypatch.setattr("shutil.which", lambda name: str(fake) if name == "wg" else None)
    backend = KernelBackend()
    backend.set(None, "wg0", SetRequest(PRIV, 51820, (PeerOp(PEER1, allowed_ips=()),)))
    assert backend.get(None, "wg0") == DeviceStatus(PRIV, 51820, ())
    argv = (base / "argv").read_text()
    assert PRIV not in argv
    assert argv.splitlines()[0] == (
        f"set wg0 private-key /dev/stdin listen-port 51820 peer {PEER1} allowed-ips "
    )
    assert (base / "stdin").read_text().startswith(PRIV + "\n")
