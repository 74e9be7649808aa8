"""The control plane's trust boundary over real HTTPS (tests/controlkit.py: a real aiohttp
server with TLS on loopback), one resilience row per item, from observed counts:

  privilege-separation   each secret read as each of two real users (useradd; root only)
  operator-listener      operator routes and /metrics asked on the device listener
  operator-credentials   bad, revoked and good credentials; failures limited and audited
  heartbeat-bounds       out-of-range heartbeats; a huge value stored the old way, scraped
  enroll-uniform-refusal unknown serial, other key, revoked, bad signature: one answer
  audit-cap              refusals past the audit log's row cap
  ratelimit-per-64       nonce requests from many addresses of one IPv6 /64 (netns; root)
  nonce-per-source       one source floods nonces while another enrolls
  reenroll-revokes-cert  the earlier certificate after a re-enrollment; a revoked device
  key-file-modes         every key-holding file the gateway and the image tools write, umask 000
  catalog-control-chars  catalogs with control characters, PUT over HTTPS and set by the CLI
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import tarfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner
from controlkit import Clock, Device, Gateway, gateway
from reskit import Report, Tally

from cjb.common.control.protocol import SIGNATURE_HEADER, EnrollResponse
from cjb.common.netlink import netns
from cjb.gateway.control.enroll import REFUSED_CODE, REFUSED_MESSAGE
from cjb.gateway.control.registry import AuditLimits
from cjb.gateway.control.settings import Settings
from cjb.gateway.control.statedir import Owners, StateDir, init_state_dir

OPERATOR_ROUTES = (
    ("GET", "/v1/operator/status"),
    ("GET", "/v1/operator/tenants"),
    ("GET", "/v1/operator/tenants/acme"),
    ("PUT", "/v1/operator/tenants/acme/catalog"),
    ("GET", "/v1/operator/devices"),
    ("GET", "/v1/operator/devices/SN-1"),
    ("POST", "/v1/operator/devices/SN-1/revoke"),
    ("GET", "/metrics"),
)


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    with gateway(tmp_path) as g:
        yield g


def _add(gw: Gateway, dev: Device, tenant: str = "acme") -> None:
    gw.ctx.registry.add_device(dev.serial, dev.factory_public, tenant, "cjb-appliance")


def _enroll(gw: Gateway, dev: Device) -> EnrollResponse:
    r = gw.enroll(dev)
    assert r.status == 200, r.text
    return EnrollResponse.model_validate(r.body)


def _heartbeat(gw: Gateway, client: tuple[Path, Path], doc: dict[str, Any]) -> Any:
    return gw.request("POST", "/v1/device/heartbeat", data=json.dumps(doc).encode(), client=client)


# -- privilege separation ------------------------------------------------------------------


# (file, readable by the API user?, readable by the data-plane user?)
def _reads_as(
    layout: StateDir, api_user: str, data_user: str
) -> Iterator[tuple[str, Path, bool, bool]]:
    """Every `_read_policy` read tried as each user: (user, path, read, allowed)."""
    for path, api_reads, data_reads in _read_policy(layout):
        for user, allowed in ((api_user, api_reads), (data_user, data_reads)):
            done = subprocess.run(
                ["runuser", "-u", user, "--", "cat", str(path)], capture_output=True, check=False
            )
            yield user, path, done.returncode == 0 and bool(done.stdout), allowed


def _read_policy(layout: StateDir) -> list[tuple[Path, bool, bool]]:
    return [
        (layout.ca_key, True, False),
        (layout.server_key, True, False),
        (layout.registry, True, False),  # operator credential hashes, inventory, audit
        (layout.settings, True, False),
        (layout.wg_private, False, True),
        (layout.desired, True, True),
        (layout.wg_public, True, True),
    ]


@contextlib.contextmanager
def _users(n: int) -> Iterator[list[str]]:
    tag = secrets.token_hex(3)
    names = [f"cjbt{tag}{k}" for k in range(n)]
    try:
        for name in names:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                check=True, capture_output=True,
            )  # fmt: skip
        yield names
    finally:
        for name in names:
            subprocess.run(["userdel", name], check=False, capture_output=True)


@pytest.mark.root
def test_privilege_separation_by_reading_as_each_user(tmp_path: Path, report: Report) -> None:
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("needs root and useradd: creates two throw-away users")
    if not Path(SYSTEM_PYTHON).exists() or not (ROOT / ".venv/lib").is_dir():
        pytest.skip(f"needs {SYSTEM_PYTHON} and {ROOT}/.venv to run code as the test users")
    # Not under pytest's tmp_path: other users must be able to walk to it.
    base = Path("/var/tmp") / f"cjbpriv-{uuid.uuid4().hex[:8]}"  # noqa: S108
    try:
        with _users(2) as (api_user, data_user):
            owners = Owners.of(api_user, data_user)
            old = os.umask(0)
            try:
                layout = init_state_dir(base / "gw", ["localhost"], "x:1", owners=owners)
            finally:
                os.umask(old)
            reads = Tally()
            wrong = []
            for user, path, read, allowed in _reads_as(layout, api_user, data_user):
                label = "read, should not" if read else "refused, should read"
                if not reads.add(read == allowed, label):
                    wrong.append(f"{user} read={read} {path.relative_to(layout.root)}")
            # The API user runs the real API code over its files: export, registry, keys.
            done = subprocess.run(
                ["runuser", "-u", api_user, "--", SYSTEM_PYTHON, "-c",
                 "import sys; sys.path[:0] = sys.argv[2:]\n"
                 "from pathlib import Path\n"
                 "from cjb.gateway.control.server import build_context\n"
                 "from cjb.gateway.control.statedir import StateDir, export_desired\n"
                 "ctx = build_context(StateDir(Path(sys.argv[1])))\n"
                 "print(export_desired(ctx.registry, StateDir(Path(sys.argv[1]))))\n",
                 str(layout.root), *_python_path(base)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            api_ok = done.returncode == 0 and done.stdout.strip() == "0"
            reads.add(api_ok, "API code failed as the API user")
            # ... and the data plane user reads its view through the data plane's own code.
            done_dp = subprocess.run(
                ["runuser", "-u", data_user, "--", SYSTEM_PYTHON, "-c",
                 "import sys; sys.path[:0] = sys.argv[2:]\n"
                 "from pathlib import Path\n"
                 "from cjb.gateway.dataplane.desired import _ExportFile\n"
                 "from cjb.gateway.dataplane.wg_transport import read_private_key\n"
                 "root = Path(sys.argv[1])\n"
                 "print(_ExportFile(root / 'export/desired.json').generation(),\n"
                 "      len(read_private_key(root / 'dataplane/wireguard/private.key')))\n",
                 str(layout.root), *_python_path(base)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            data_ok = done_dp.returncode == 0 and done_dp.stdout.split() == ["0", "44"]
            reads.add(data_ok, "data-plane code failed as the data-plane user")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    report(
        "privilege-separation", *reads.counts,
        f"CA/TLS/registry/settings/WireGuard keys read by `cat` as each of two real users, "
        f"then each side's own code run as its user {reads.lost_note()}".rstrip(),
        means="reads that went as the layout says (allowed read, forbidden refused), and "
        "each side's own code reading its files as its user",
    )  # fmt: skip
    assert not wrong, wrong
    assert api_ok, done.stderr[-2000:]
    assert data_ok, done_dp.stderr[-2000:]


ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"  # the venv's interpreter may live where others cannot go


def _python_path(base: Path) -> list[str]:
    """sys.path entries for a child running as another user: a directory whose `cjb` is
    this checkout (as an installed package would be), and the venv's libraries."""
    src = base / "src"
    src.mkdir(exist_ok=True)
    with contextlib.suppress(FileExistsError):
        (src / "cjb").symlink_to(ROOT)
    site = next((ROOT / ".venv/lib").glob("python3*/site-packages"))
    return [str(src), str(site)]


# -- operator surface ----------------------------------------------------------------------


def test_operator_routes_are_not_on_the_device_listener(gw: Gateway, report: Report) -> None:
    dev = Device("SN-1")
    _add(gw, dev)
    auth = {"Authorization": f"Bearer {gw.token}"}
    device_side = Counter[int]()
    hidden = Tally()
    for method, path in OPERATOR_ROUTES:
        r = gw.request(method, path, headers=auth, data=b"[]" if method != "GET" else None)
        device_side[r.status] += 1
        hidden.add(r.status == 404, f"answered {r.status}")
    operator_side = Counter[int]()
    for method, path in OPERATOR_ROUTES:
        if method == "POST":  # not revoking the test device here
            continue
        data = b"[]" if method == "PUT" else None
        operator_side[gw.operator(method, path, data=data).status] += 1
    report(
        "operator-listener", *hidden.counts,
        f"operator routes and /metrics with a valid token on the device listener: "
        f"{dict(device_side)}; the operator listener answered {dict(operator_side)}",
        means="operator routes asked on the device listener with a valid token that "
        "answered 404",
    )  # fmt: skip
    assert gw.ctx.settings.operator.listen == "127.0.0.1"  # the default: loopback
    assert device_side == {404: len(OPERATOR_ROUTES)}
    assert operator_side == {200: len(OPERATOR_ROUTES) - 1}


def test_operator_credentials_named_revocable_limited_audited(gw: Gateway, report: Report) -> None:
    alice, bob = gw.add_operator("alice"), gw.add_operator("bob")

    def ok(token: str) -> int:
        auth = {"Authorization": f"Bearer {token}"}
        return gw.operator("GET", "/v1/operator/status", headers=auth).status

    before = (ok(alice), ok(bob))
    gw.ctx.registry.revoke_operator("bob")
    after = (ok(alice), ok(bob))  # bob revoked at once, alice untouched
    # Hashed at rest: no token's secret in the registry file.
    raw = (
        gw.layout.registry.read_bytes()
        + gw.layout.registry.with_name("registry.sqlite3-wal").read_bytes()
    )
    at_rest = [t.split(".")[1] for t in (alice, bob, gw.token) if t.split(".")[2].encode() in raw]
    # A guesser from one source: the burst of failures, then 429 without any check.
    gw.clock.offset += 3600  # a full bucket
    burst = gw.ctx.settings.operator.failure_burst
    guesses = 40
    answers = Counter[int]()
    refused = Tally()
    for i in range(guesses):
        status = ok(f"cjbop.alice.guess{i}")
        answers[status] += 1
        refused.add(status in (401, 429), f"answered {status}")
    audited = [
        r for r in gw.ctx.registry.audit_log(limit=1000) if r.event == "operator-auth-failed"
    ]
    limited_ok = ok(alice)  # the limit holds for the right token too, from that source
    gw.clock.offset += burst / gw.ctx.settings.operator.failures_per_second + 1
    refilled_ok = ok(alice)
    report(
        "operator-credentials", *refused.counts,
        f"{dict(answers)} (burst {burst}); {len(audited)} failures audited; alice/bob answered "
        f"{before} before bob's revocation, {after} after; secrets in the registry file: "
        f"{at_rest or 'none'}",
        means="guessed operator tokens from one source refused (401, or 429 past the burst)",
    )  # fmt: skip
    assert before == (200, 200)
    assert after == (200, 401)  # revoked at once, the other untouched
    assert not at_rest, at_rest
    assert answers == {401: burst, 429: guesses - burst}
    reasons = Counter(r.reason for r in audited)
    assert reasons["wrong-secret"] == burst and reasons["revoked"] == 1
    assert all(r.peer == "127.0.0.1" for r in audited)
    assert limited_ok == 429 and refilled_ok == 200
    text = gw.operator("GET", "/metrics").text
    assert f"cjb_operator_auth_rate_limited_total {float(guesses - burst + 1)}" in text


# -- heartbeat bounds ----------------------------------------------------------------------


def test_heartbeat_bounds_and_metrics_never_500(
    gw: Gateway, tmp_path: Path, report: Report
) -> None:
    dev = Device("SN-1")
    _add(gw, dev)
    client = dev.write_client_files(_enroll(gw, dev).device_certificate_pem, tmp_path)
    good = {"serial": dev.serial, "config_version": 1, "uptime_seconds": 5, "tunnel_up": True}
    assert _heartbeat(gw, client, good).status == 200
    stored = gw.ctx.registry.device(dev.serial)
    bad = [
        {"config_version": 10**40},
        {"uptime_seconds": -1},
        {"uptime_seconds": 2**63},
        {"last_handshake_age_seconds": 10**400},
        {"counters": {"x": 10**30}},
        {"counters": {f"c{i}": 1 for i in range(10_000)}},
        {"counters": {"a\r\nb": 1}},
        {"uptime_seconds": 1e308},
    ]
    refused = 0
    bounded = Tally()
    for over in bad:
        r = _heartbeat(gw, client, {**good, **over})
        field = next(iter(over))
        # 400 naming the field, or 413 for the body too big to read at all
        if bounded.add(
            (r.status == 400 and field in r.body["message"]) or r.status == 413,
            f"{field} answered {r.status}",
        ):
            refused += 1
    unchanged = gw.ctx.registry.device(dev.serial) == stored
    bounded.add(unchanged, "stored heartbeat changed")
    # The old way: a value no bound stopped, already in the registry.
    gw.ctx.registry.record_heartbeat(
        dev.serial, "127.0.0.1", {**good, "last_handshake_age_seconds": 10**400}
    )
    scrape = gw.operator("GET", "/metrics")
    gw.ctx.registry.record_heartbeat(
        dev.serial, "127.0.0.1", {**good, "last_handshake_age_seconds": float("inf")}
    )
    scrape_inf = gw.operator("GET", "/metrics")
    bounded.add(scrape.status == 200, f"/metrics over 10**400 answered {scrape.status}")
    bounded.add(scrape_inf.status == 200, f"/metrics over inf answered {scrape_inf.status}")
    report(
        "heartbeat-bounds", *bounded.counts,
        f"{refused}/{len(bad)} out-of-range heartbeats refused, stored heartbeat unchanged: "
        f"{unchanged}; /metrics over a stored 10**400 and inf: {scrape.status}, "
        f"{scrape_inf.status} {bounded.lost_note()}".rstrip(),
        means="out-of-range heartbeats answered 400 naming the field (or 413), the stored "
        "heartbeat left unchanged, /metrics 200 over a stored 10**400 and over inf",
    )  # fmt: skip
    assert refused == len(bad) and unchanged
    assert scrape.status == scrape_inf.status == 200
    assert 'cjb_tenant_tunnel_up{serial="SN-1",tenant="acme"} 1.0' in scrape.text


# -- uniform enrollment refusals -------------------------------------------------------------


def test_enrollment_refusals_look_alike_on_the_wire(gw: Gateway, report: Report) -> None:
    known, revoked = Device("SN-KNOWN"), Device("SN-REVOKED")
    _add(gw, known)
    _add(gw, revoked)
    gw.ctx.registry.revoke(revoked.serial, "stolen", "test")

    def attempt(case: str) -> tuple[int, str, float]:
        gw.clock.offset += 1.0  # the per-source rate limits are not what this tests
        if case == "unknown-serial":
            dev, sign_with = Device(f"SN-NOPE-{secrets.token_hex(2)}"), None
        elif case == "factory-key-mismatch":
            dev, sign_with = Device(known.serial), None  # its own, other key
        elif case == "device-revoked":
            dev, sign_with = revoked, None
        else:
            dev, sign_with = known, Device("x").factory_key
        body = dev.body(gw.nonce())
        headers = {SIGNATURE_HEADER: dev.sign(body, sign_with)}
        start = time.perf_counter()
        r = gw.request("POST", "/v1/enroll", data=body, headers=headers)
        return r.status, r.text, time.perf_counter() - start

    cases = ("unknown-serial", "factory-key-mismatch", "device-revoked", "bad-signature")
    rounds = 8
    expected = (
        403,
        json.dumps({"error": REFUSED_CODE, "message": REFUSED_MESSAGE}, separators=(",", ":")),
    )
    answers: Counter[tuple[int, str]] = Counter()
    times: dict[str, list[float]] = {c: [] for c in cases}
    uniform = Tally()
    for _ in range(rounds):
        for case in cases:
            status, text, took = attempt(case)
            answers[(status, text)] += 1
            times[case].append(took)
            uniform.add((status, text) == expected, f"{case} answered otherwise ({status})")
    alike = answers[expected]
    reasons = Counter(
        r.reason for r in gw.ctx.registry.audit_log(limit=1000) if r.event == "enroll-refused"
    )
    medians = {c: sorted(t)[len(t) // 2] * 1000 for c, t in times.items()}
    report(
        "enroll-uniform-refusal", *uniform.counts,
        "audit reasons " + ", ".join(f"{c} {reasons[c]}" for c in cases)
        + "; median ms " + ", ".join(f"{c} {m:.1f}" for c, m in medians.items())
        + (f"; {uniform.lost_note()}" if uniform.lost else ""),
        means="refused enrollments (unknown serial, other key, revoked, bad signature) "
        "answered with the one 403 status and body",
    )  # fmt: skip
    assert len(answers) == 1 and alike == rounds * len(cases), answers
    assert all(reasons[c] == rounds for c in cases), reasons


# -- audit cap ----------------------------------------------------------------------------


def test_audit_storage_is_capped(tmp_path: Path, report: Report) -> None:
    layout = init_state_dir(tmp_path / "gw", ["127.0.0.1"], "x:1")
    base = layout.settings.read_text()
    layout.settings.write_text(base.replace("max_rows = 100000", "max_rows = 100"))
    with contextlib.closing(_GatewayHandle(layout)) as h:
        gw = h.gw
        assert gw.ctx.registry.audit_limits == AuditLimits(100, 365 * 86400.0)
        tries = 300
        capped = Tally()
        for i in range(tries):
            gw.clock.offset += 0.2
            r = gw.enroll(Device(f"SN-FLOOD-{i}"))
            held = gw.ctx.registry.audit_rows()  # the cap holds after every refusal
            label = f"answered {r.status}" if r.status != 403 else f"log at {held} rows"
            capped.add(r.status == 403 and held <= 100, label)
        rows, pruned = gw.ctx.registry.audit_rows(), gw.ctx.registry.audit_pruned()
        text = gw.operator("GET", "/metrics").text
    report(
        "audit-cap", *capped.counts,
        f"{tries} refusals; the log holds {rows} rows (cap 100), {pruned} oldest pruned and "
        f"counted in cjb_audit_pruned_total {capped.lost_note()}".rstrip(),
        means="unknown-serial enrollments refused (403) with the audit log at or under its "
        "100-row cap afterwards",
    )  # fmt: skip
    assert rows == 100 and pruned >= tries - 100
    assert f"cjb_audit_pruned_total {float(pruned)}" in text
    # The enrollment counters still count every attempt, pruned rows included.
    assert f'cjb_enrollments_total{{outcome="unknown-serial"}} {float(tries)}' in text


class _GatewayHandle:
    def __init__(self, layout: StateDir) -> None:
        self.gw = Gateway(layout, Clock())

    def close(self) -> None:
        self.gw.close()


# -- rate limits per /64 ------------------------------------------------------------------


@pytest.mark.root
def test_rate_limit_per_ipv6_64_over_https(tmp_path: Path, report: Report) -> None:
    """Nonce requests from 40 addresses of one /64 share one bucket; a second /64 and an
    IPv4 address have their own. Real sockets, bound to those source addresses inside a
    network namespace made here (loopback only)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: a network namespace with addresses to send from")
    ns = f"cjbrl{uuid.uuid4().hex[:6]}"
    a64 = [f"2001:db8:64:1::{i + 1:x}" for i in range(40)]
    b64 = "2001:db8:64:2::1"
    ip = ["ip", "-n", ns]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run([*ip, "link", "set", "lo", "up"], check=True)
        for addr in [*a64, b64]:
            subprocess.run([*ip, "addr", "add", f"{addr}/64", "dev", "lo", "nodad"], check=True)
        with netns(ns):
            layout = init_state_dir(tmp_path / "gw", [a64[0]], "x:1")
            g = _NsGateway(layout)
        try:
            burst = g.ctx.settings.api.nonce_burst

            async def ask(source: str) -> int:
                conn = aiohttp.TCPConnector(local_addr=(source, 0), ssl=g.ssl())
                async with (
                    aiohttp.ClientSession(connector=conn) as s,
                    s.post(f"https://[{a64[0]}]:{g.port}/v1/enroll/nonce") as r,
                ):
                    return r.status

            async def run() -> tuple[list[int], int]:
                in_order = [await ask(a) for a in a64]
                return in_order, await ask(b64)

            g.clock.freeze()
            with netns(ns):
                in_order, other = asyncio.run(run())
        finally:
            g.close()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    same = Counter(in_order)
    one_bucket = Tally()
    for i, status in enumerate(in_order):
        wanted = 200 if i < burst else 429
        one_bucket.add(status == wanted, f"{'in' if i < burst else 'past'} the burst: {status}")
    one_bucket.add(other == 200, f"next /64 answered {other}")
    report(
        "ratelimit-per-64", *one_bucket.counts,
        f"{len(a64)} addresses of one /64 (burst {burst}): {same[200]} served, {same[429]} "
        f"x 429; the next /64 answered {other} {one_bucket.lost_note()}".rstrip(),
        means="nonce requests answered as one bucket per /64: from one /64 the first "
        "burst 200 and the rest 429, from the next /64 200",
    )  # fmt: skip
    assert same == {200: burst, 429: len(a64) - burst}
    assert other == 200


class _NsGateway(Gateway):
    """A Gateway whose device listener binds every address (inside the caller's netns)."""

    def __init__(self, layout: StateDir) -> None:
        from cjb.gateway.control.server import start

        super().__init__(layout, Clock())
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.runner, self.port = asyncio.run_coroutine_threadsafe(
            start(self.ctx, layout, "::", 0), self.loop
        ).result(60)


# -- nonces per source ---------------------------------------------------------------------


def test_one_source_cannot_evict_anothers_nonce(gw: Gateway, report: Report) -> None:
    dev = Device("SN-1")
    _add(gw, dev)
    victim_nonce = gw.nonce()  # from 127.0.0.1, over HTTPS
    quota = gw.ctx.settings.api.nonces_per_source
    contained = Tally()
    flood = 20_000  # straight into the store as another source: the HTTPS rate limit is
    for _ in range(flood):  # per source, so a flood this size needs many sources anyway
        gw.ctx.nonces.issue(gw.clock(), os.urandom(32), "2001:db8:bad::/64")
        over = gw.ctx.nonces.held_by("2001:db8:bad::/64") > quota
        contained.add(
            not over and gw.ctx.nonces.evicted_other_source == 0,
            "flooder over its quota" if over else "another source's nonce evicted",
        )
    held = gw.ctx.nonces.held_by("2001:db8:bad::/64")
    r = gw.enroll(dev, victim_nonce)
    contained.add(r.status == 200, f"the other source's nonce answered {r.status}")
    report(
        "nonce-per-source", *contained.counts,
        f"one source issued {flood} nonces and holds {held} (quota {quota}); the other "
        f"source's nonce then enrolled: {r.status}; evicted from another source: "
        f"{gw.ctx.nonces.evicted_other_source} {contained.lost_note()}".rstrip(),
        means="flood nonces after which the flooder held at most its quota and no other "
        "source's nonce was evicted, and the other source's nonce enrolling (200) afterwards",
    )  # fmt: skip
    assert held == gw.ctx.settings.api.nonces_per_source
    assert r.status == 200, r.text
    assert gw.ctx.nonces.evicted_other_source == 0


# -- re-enrollment revokes the earlier certificate ----------------------------------------------


def test_reenrollment_revokes_earlier_certificates(
    gw: Gateway, tmp_path: Path, report: Report
) -> None:
    dev = Device("SN-1")
    _add(gw, dev)
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = dev.write_client_files(_enroll(gw, dev).device_certificate_pem, tmp_path / "first")
    assert gw.request("GET", "/v1/device/config", client=first).status == 200
    second = dev.write_client_files(_enroll(gw, dev).device_certificate_pem, tmp_path / "second")
    hb = {"serial": dev.serial, "config_version": 1, "uptime_seconds": 5, "tunnel_up": True}
    tries = {
        "old cert, config": gw.request("GET", "/v1/device/config", client=first),
        "old cert, heartbeat": _heartbeat(gw, first, hb),
        "new cert, config": gw.request("GET", "/v1/device/config", client=second),
    }
    # A revoked device: state checked on every request, certificates or not.
    gw.ctx.registry.revoke(dev.serial, "stolen", "test")
    tries["revoked, config"] = gw.request("GET", "/v1/device/config", client=second)
    tries["revoked, heartbeat"] = _heartbeat(gw, second, hb)
    certs = gw.ctx.registry.certificates(dev.serial)
    expected = {
        "old cert, config": 403, "old cert, heartbeat": 403, "new cert, config": 200,
        "revoked, config": 403, "revoked, heartbeat": 403,
    }  # fmt: skip
    as_expected = Tally()
    for k, v in expected.items():
        as_expected.add(tries[k].status == v, f"{k}: {tries[k].status}")
    report(
        "reenroll-revokes-cert", *as_expected.counts,
        f"{len(certs)} certificates, {sum(c.revoked_at is not None for c in certs)} revoked "
        f"{as_expected.lost_note()}".rstrip(),
        means="requests answered as they should: the earlier certificate refused (403) after "
        "re-enrollment, the new one served (200) until the device was revoked, then 403",
    )  # fmt: skip
    assert {k: r.status for k, r in tries.items()} == expected
    assert tries["old cert, config"].body["error"] == "certificate-revoked"
    assert all(c.revoked_at is not None for c in certs)


def test_device_state_checked_on_every_request(gw: Gateway, tmp_path: Path) -> None:
    """Even with its certificate untouched (a registry edited by hand, a future code path
    that forgets the certificates), a device that is not enrolled is refused."""
    dev = Device("SN-1")
    _add(gw, dev)
    client = dev.write_client_files(_enroll(gw, dev).device_certificate_pem, tmp_path)
    assert gw.request("GET", "/v1/device/config", client=client).status == 200
    with gw.ctx.registry._tx() as c:
        c.execute("UPDATE devices SET state = 'revoked' WHERE serial = ?", (dev.serial,))
    r = gw.request("GET", "/v1/device/config", client=client)
    assert r.status == 403 and r.body["error"] == "device-revoked"


# -- key-file modes --------------------------------------------------------------------------


def test_key_files_private_whatever_the_umask(tmp_path: Path, report: Report) -> None:
    from cjb.appliance.image.personalise import personalise

    old = os.umask(0)
    try:
        layout = init_state_dir(tmp_path / "gw", ["localhost"], "x:1")
        tarball = tmp_path / "root.tar"
        with tarfile.open(tarball, "w") as tar:
            tar.add(layout.wg_public, arcname="./etc/placeholder")
        record = personalise(tarball, "SN-MODE", "acme")
        inventory = tmp_path / "inventory.jsonl"
        from cjb.common.private_file import atomic_write

        atomic_write(inventory, record.model_dump_json() + "\n")
        root = tmp_path / "rootdir"
        (root / "etc").mkdir(parents=True)
        personalise(root, "SN-MODE2", "acme")
    finally:
        os.umask(old)
    private = [layout.ca_key, layout.server_key, layout.wg_private, layout.registry,
               layout.settings, tarball, inventory]  # fmt: skip
    private += [p for p in root.rglob("*") if p.is_file() and p.name.endswith((".pem", ".key"))]
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in private}
    private_ok = Tally()
    for p, m in modes.items():
        private_ok.add(m == 0o600, f"{p.name} {oct(m)}")
    ok = private_ok.survived
    report(
        "key-file-modes", *private_ok.counts,
        "CA/TLS/WireGuard keys, registry, settings, personalised tarball and root, inventory "
        f"written under umask 000 {private_ok.lost_note()}".rstrip(),
        means="key-holding files the gateway and the image tools wrote that are mode 0600",
    )  # fmt: skip
    assert ok == len(modes), {str(p): oct(m) for p, m in modes.items() if m != 0o600}


# -- catalog control characters ---------------------------------------------------------------


def test_catalog_control_characters_refused(gw: Gateway, tmp_path: Path, report: Report) -> None:
    dev = Device("SN-1")
    _add(gw, dev)
    bad = [
        {"instance": "Files\r\nX: 1"},
        {"instance": "Files\x00"},
        {"txt": {"path": "/\n"}},
        {"upnp_device_type": "urn:x\r\nLOCATION: http://evil/"},
        {"upnp_description_path": "/d.xml\x1b[2J"},
        {"upnp_description_path": "/d.xml\x7f"},
    ]
    refused = 0
    refusals = Tally()
    for over in bad:
        doc = [{"instance": "Files", "service_type": "_http._tcp", "port": 80, **over}]
        r = gw.operator("PUT", "/v1/operator/tenants/acme/catalog", data=json.dumps(doc).encode())
        field = next(iter(over))
        named = r.status == 400 and f"catalog[0].{field}" in r.body["message"]
        if refusals.add(named, f"PUT {field} answered {r.status}"):
            refused += 1
    from cjb.cli.main import main

    cat = tmp_path / "catalog.json"
    cat.write_text(json.dumps([{"instance": "A\rB", "service_type": "_http._tcp", "port": 80}]))
    cli = CliRunner().invoke(
        main, ["gateway", "catalog", "set", "--state-dir", str(gw.layout.root), "acme", str(cat)]
    )
    cli_refused = (
        cli.exit_code == 1 and "instance" in cli.output and "control character" in cli.output
    )
    refusals.add(cli_refused, f"CLI exit {cli.exit_code}")
    tenant = gw.ctx.registry.tenant("acme")
    unchanged = tenant is not None and tenant.catalog == []
    refusals.add(unchanged, "catalog changed")
    report(
        "catalog-control-chars", *refusals.counts,
        f"{refused}/{len(bad)} PUTs answered 400 naming the field, the CLI refused: "
        f"{cli_refused}; catalog unchanged: {unchanged} {refusals.lost_note()}".rstrip(),
        means="catalogs with control characters refused (PUT: 400 naming the field; CLI: "
        "exit 1 naming it), and the stored catalog left empty",
    )  # fmt: skip
    assert refused == len(bad) and cli_refused, cli.output
    assert tenant is not None and tenant.catalog == []


def test_settings_refuse_one_port_for_both_listeners() -> None:
    with pytest.raises(ValueError, match=r"operator\.port must differ"):
        Settings.model_validate({"api": {"port": 9000}, "operator": {"port": 9000}})
    assert pwd  # (imported for the root tests)


@pytest.mark.root
def test_migration_splits_an_old_state_dir_between_two_users(tmp_path: Path) -> None:
    """An old single-directory state dir (one user, everything together) migrated as root
    with both users: afterwards each user reads exactly what the layout says."""
    from cjb.gateway.control.statedir import migrate_state_dir

    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("needs root and useradd: creates two throw-away users")
    base = Path("/var/tmp") / f"cjbmig-{uuid.uuid4().hex[:8]}"  # noqa: S108 - others walk it
    try:
        new = init_state_dir(tmp_path / "new", ["localhost"], "x:1")
        old = base / "gw"
        for rel, src in (
            ("ca/ca.key", new.ca_key), ("ca/ca.pem", new.ca_cert),
            ("tls/server.key", new.server_key), ("tls/server.pem", new.server_cert),
            ("wireguard/private.key", new.wg_private),
            ("wireguard/public.key", new.wg_public), ("gateway.toml", new.settings),
            ("registry.sqlite3", new.registry),
        ):  # fmt: skip
            (old / rel).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            (old / rel).write_bytes(src.read_bytes())
        (old / "operator.token").write_text("legacy\n")
        said: list[str] = []
        with _users(2) as (api_user, data_user):
            layout = migrate_state_dir(old, Owners.of(api_user, data_user), said.append)
            wrong = [
                f"{user} {path.relative_to(layout.root)}"
                for user, path, read, allowed in _reads_as(layout, api_user, data_user)
                if read != allowed
            ]
        assert not wrong, wrong
        assert any("operator credential 'migrated'" in line for line in said), said
        assert not (old / "operator.token").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)
