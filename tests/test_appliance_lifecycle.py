"""The appliance life-cycle machine (sans-IO): exact transitions, commands, waits and status
lines, as tables. Time is a number we pass; randomness is a fixed fraction."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cjb.appliance.backoff import Backoff
from cjb.appliance.lifecycle import (
    Activate,
    ActivateSource,
    ConfigOk,
    Enroll,
    EnrollOk,
    Failed,
    Failure,
    FailureKind,
    FetchConfig,
    Forget,
    HeartbeatOk,
    Lifecycle,
    LifecycleError,
    NonceOk,
    Phase,
    Reconnect,
    RequestNonce,
    Restored,
    SendHeartbeat,
)

HALF = 0.5  # rng: every jittered delay is half its ceiling
REFUSED_CONN = Failure(FailureKind.UNREACHABLE, "connection refused")
UNKNOWN = Failure(FailureKind.REFUSED, "serial not in the inventory", 403, "unknown-serial")
REVOKED = Failure(FailureKind.AUTH, "certificate revoked", 403, "revoked")
NONCE = "n" * 43


def machine(restored: Restored | None = None) -> Lifecycle:
    m = Lifecycle(rng=lambda: HALF, backoff=Backoff(1.0, 300.0), restored=restored)
    return m


# -- backoff ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 256.0), (10, 300.0), (1000, 300.0)],
)
def test_backoff_ceiling_doubles_to_the_cap(attempt: int, ceiling: float) -> None:
    assert Backoff(1.0, 300.0).ceiling(attempt) == ceiling


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.999])
def test_full_jitter_is_uniform_below_the_ceiling(fraction: float) -> None:
    assert Backoff(1.0, 300.0).delay(4, lambda: fraction) == pytest.approx(8.0 * fraction)


# -- the enrollment path, step by step -------------------------------------------------

# (now, input, expected commands, expected phase, expected next deadline)
# input: "timer" or a result fed with on_response.
ENROLL_WITH_RETRIES = [
    (0.0, "timer", [RequestNonce()], Phase.REQUESTING_NONCE, None),
    (0.1, Failed(REFUSED_CONN), [], Phase.UNENROLLED, 0.1 + 0.5),  # retry 1: ceiling 1 s
    (0.3, "timer", [], Phase.UNENROLLED, 0.6),  # not due yet: nothing happens
    (0.6, "timer", [RequestNonce()], Phase.REQUESTING_NONCE, None),
    (0.7, Failed(REFUSED_CONN), [], Phase.UNENROLLED, 0.7 + 1.0),  # retry 2: ceiling 2 s
    (1.7, "timer", [RequestNonce()], Phase.REQUESTING_NONCE, None),
    (1.8, NonceOk(NONCE), [Enroll(NONCE)], Phase.ENROLLING, None),
    (1.9, Failed(UNKNOWN), [], Phase.UNENROLLED, 1.9 + 2.0),  # retry 3: ceiling 4 s
    (3.9, "timer", [RequestNonce()], Phase.REQUESTING_NONCE, None),
    (4.0, NonceOk(NONCE), [Enroll(NONCE)], Phase.ENROLLING, None),
    (4.1, EnrollOk(1, 30), [Activate(ActivateSource.ENROLL)], Phase.ENROLLED, 34.1),
    (34.1, "timer", [SendHeartbeat()], Phase.ENROLLED, None),
    (34.2, HeartbeatOk(1), [], Phase.ENROLLED, 64.2),
    (64.2, "timer", [SendHeartbeat()], Phase.ENROLLED, None),
    (64.3, HeartbeatOk(2), [FetchConfig()], Phase.ENROLLED, None),  # newer config
    (64.4, ConfigOk(2, 10), [Activate(ActivateSource.CONFIG)], Phase.ENROLLED, 74.4),
]


def _drive(m: Lifecycle, table: list[tuple[float, object, list[object], Phase, float | None]]):
    for step, (now, event, commands, phase, deadline) in enumerate(table):
        got = m.on_timer(now) if event == "timer" else m.on_response(now, event)  # type: ignore[arg-type]
        assert got == commands, f"step {step} ({event}): commands"
        assert m.phase is phase, f"step {step} ({event}): phase"
        if deadline is None:
            assert m.next_deadline() is None, f"step {step}: deadline"
        else:
            assert m.next_deadline() == pytest.approx(deadline), f"step {step}: deadline"


def test_enrollment_retries_with_backoff_then_enrolls_and_heartbeats() -> None:
    m = machine()
    assert m.start(0.0) == []
    _drive(m, ENROLL_WITH_RETRIES)
    assert m.config_version == 2 and m.heartbeat_seconds == 10
    assert m.counters.as_dict() == {
        "enroll_attempts": 4,
        "enrollments": 1,
        "heartbeats_ok": 2,
        "heartbeats_failed": 0,
        "config_fetches": 1,
        "reenrollments": 0,
        "reconnects": 0,
    }


def test_restart_with_persisted_state_does_not_enroll() -> None:
    m = machine(Restored(config_version=5, heartbeat_seconds=30))
    assert m.start(100.0) == [Activate(ActivateSource.RESTORED)]
    assert m.phase is Phase.ENROLLED
    # The first thing it sends is a heartbeat, at once, never a nonce request.
    assert m.on_timer(100.0) == [SendHeartbeat()]
    assert m.on_response(100.1, HeartbeatOk(5)) == []
    assert m.counters.enroll_attempts == 0


def test_revoked_certificate_forgets_and_enrolls_again_at_once() -> None:
    m = machine(Restored(config_version=5, heartbeat_seconds=30))
    m.start(0.0)
    _drive(
        m,
        [
            (0.0, "timer", [SendHeartbeat()], Phase.ENROLLED, None),
            (0.1, Failed(REVOKED), [Forget(REVOKED.describe())], Phase.UNENROLLED, 0.1),
            (0.1, "timer", [RequestNonce()], Phase.REQUESTING_NONCE, None),
            (0.2, NonceOk(NONCE), [Enroll(NONCE)], Phase.ENROLLING, None),
            # The gateway refuses the revoked unit: it backs off like any refusal.
            (0.3, Failed(UNKNOWN), [], Phase.UNENROLLED, 0.8),
        ],
    )
    assert m.config_version is None
    assert m.counters.reenrollments == 1


def test_wan_loss_keeps_enrollment_retries_within_heartbeat_and_reconnects() -> None:
    m = machine(Restored(config_version=1, heartbeat_seconds=4))
    m.start(0.0)
    rows = [(0.0, "timer", [SendHeartbeat()], Phase.ENROLLED, None)]
    now = 0.0
    # Backoff ceilings 1, 2, 4, 8...: halves 0.5, 1, 2, then capped by the 4 s heartbeat.
    for failures, wait in enumerate([0.5, 1.0, 2.0, 4.0, 4.0, 4.0], start=1):
        expected = []
        if failures % 3 == 0:
            expected = [
                Reconnect(f"{failures} requests failed in a row: {REFUSED_CONN.describe()}")
            ]
        rows.append((now + 0.1, Failed(REFUSED_CONN), expected, Phase.ENROLLED, now + 0.1 + wait))
        now = now + 0.1 + wait
        rows.append((now, "timer", [SendHeartbeat()], Phase.ENROLLED, None))
    rows.append((now + 0.1, HeartbeatOk(1), [], Phase.ENROLLED, now + 0.1 + 4))
    _drive(m, rows)
    assert m.counters.heartbeats_failed == 6 and m.counters.reconnects == 2
    assert m.failures == 0 and m.last_failure is None


# -- status lines ------------------------------------------------------------------------


def test_status_lines_say_what_happens_and_why() -> None:
    m = Lifecycle(rng=lambda: 1.0, backoff=Backoff(1.0, 300.0))
    m.start(0.0)
    assert m.status_line(0.0) == "not enrolled: enrolling now"
    m.on_timer(0.0)
    assert m.status_line(0.0) == "enrolling (attempt 1): asking for a nonce"
    for _ in range(3):
        m.on_response(0.0, Failed(REFUSED_CONN))
        m.on_timer(m.next_deadline() or 0.0)
    m.on_response(0.0, Failed(REFUSED_CONN))  # fourth failure: ceiling 8 s, rng 1.0 -> 8 s
    assert m.status_line(0.0) == (
        "waiting 8 s before retry 4: gateway unreachable (connection refused)"
    )
    assert m.status_line(5.5) == (
        "waiting 3 s before retry 4: gateway unreachable (connection refused)"
    )
    m.on_timer(8.0)
    m.on_response(8.0, NonceOk(NONCE))
    assert m.status_line(8.0) == "enrolling (attempt 5): sending the signed enrollment request"
    m.on_response(8.1, EnrollOk(3, 30))
    assert m.status_line(9.0) == "enrolled, config version 3; first heartbeat pending"
    m.on_timer(38.1)
    m.on_response(38.1, HeartbeatOk(3))
    assert m.status_line(50.2) == "enrolled, config version 3; last heartbeat ok 12 s ago"


@pytest.mark.parametrize(
    ("failure", "text"),
    [
        (REFUSED_CONN, "gateway unreachable (connection refused)"),
        (
            UNKNOWN,
            "refused by the gateway (HTTP 403: unknown-serial: serial not in the inventory)",
        ),
        (REVOKED, "device certificate refused (HTTP 403: revoked: certificate revoked)"),
        (
            Failure(FailureKind.UNTRUSTED, "self-signed certificate"),
            "gateway certificate not trusted (self-signed certificate)",
        ),
        (Failure(FailureKind.SERVER, "boom", 503), "gateway error (HTTP 503: boom)"),
        (
            Failure(FailureKind.LAN, "br-lan has no IPv4 address"),
            "LAN not ready (br-lan has no IPv4 address)",
        ),
    ],
)
def test_failure_descriptions(failure: Failure, text: str) -> None:
    assert failure.describe() == text


def test_a_result_nobody_asked_for_is_a_bug_not_a_transition() -> None:
    m = machine()
    m.start(0.0)
    with pytest.raises(LifecycleError):
        m.on_response(0.0, NonceOk(NONCE))
    m.on_timer(0.0)
    with pytest.raises(LifecycleError):
        m.on_response(0.0, HeartbeatOk(1))  # the outstanding request is RequestNonce


def test_nothing_is_due_while_a_request_is_outstanding() -> None:
    m = machine()
    m.start(0.0)
    assert m.on_timer(0.0) == [RequestNonce()]
    assert m.next_deadline() is None
    assert m.on_timer(1000.0) == []


# -- invariants under any sequence of outcomes -----------------------------------------

OUTCOMES = st.sampled_from(
    [
        "ok",
        Failure(FailureKind.UNREACHABLE, "timed out"),
        Failure(FailureKind.REFUSED, "nonce-replayed", 400, "nonce-replayed"),
        Failure(FailureKind.AUTH, "revoked", 403, "certificate-revoked"),
        Failure(FailureKind.SERVER, "busy", 503),
        Failure(FailureKind.BAD_RESPONSE, "not JSON"),
        Failure(FailureKind.LAN, "no address"),
    ]
)


def _answer(request: object, outcome: object, version: int) -> object:
    if isinstance(outcome, Failure):
        return Failed(outcome)
    if isinstance(request, RequestNonce):
        return NonceOk(NONCE)
    if isinstance(request, Enroll):
        return EnrollOk(version, 30)
    if isinstance(request, FetchConfig):
        return ConfigOk(version, 30)
    return HeartbeatOk(version)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(OUTCOMES, st.integers(1, 4), st.floats(0, 1)), max_size=60),
    st.booleans(),
)
def test_any_outcome_sequence_keeps_the_machine_consistent(
    steps: list[tuple[object, int, float]], restored: bool
) -> None:
    fraction = [0.5]
    m = Lifecycle(
        rng=lambda: fraction[0],
        backoff=Backoff(1.0, 300.0),
        restored=Restored(1, 30) if restored else None,
    )
    now = 0.0
    m.start(now)
    for outcome, version, jitter in steps:
        fraction[0] = jitter
        deadline = m.next_deadline()
        assert deadline is not None, "idle with nothing scheduled: the machine would hang"
        assert deadline - now <= 300.0 + 1e-9, "never waits longer than the backoff cap"
        now = max(now, deadline)
        commands = m.on_timer(now)
        requests = [
            c
            for c in commands
            if isinstance(c, RequestNonce | Enroll | SendHeartbeat | FetchConfig)
        ]
        while requests:
            assert len(requests) == 1, "one request at a time"
            assert m.next_deadline() is None, "nothing is due while a request is outstanding"
            commands = m.on_response(now, _answer(requests[0], outcome, version))  # type: ignore[arg-type]
            requests = [
                c
                for c in commands
                if isinstance(c, RequestNonce | Enroll | SendHeartbeat | FetchConfig)
            ]
            outcome = "ok" if requests else outcome  # follow-ups (Enroll, FetchConfig) succeed
        assert m.status_line(now)  # always something to say
        assert (m.phase is Phase.ENROLLED) == (m.config_version is not None)


# -- the cores stay sans-IO (docs/architecture.md) ------------------------------------------------


@pytest.mark.parametrize("module", ["lifecycle", "backoff", "arp_probe", "lan"])
def test_appliance_cores_import_no_io(module: str) -> None:
    import ast
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "appliance" / f"{module}.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    io = {"socket", "select", "time", "asyncio", "threading", "random", "subprocess", "pyroute2"}
    assert not {n.split(".")[0] for n in names} & io, f"{module} imports IO: {sorted(names)}"
    assert not any(n.startswith("cjb.common.netlink.real") for n in names)


def test_replies_travel_through_the_machine_to_activate() -> None:
    """The enrollment reply and a fetched config come back in `Activate`: the adapter keeps
    nothing aside, and a reply the machine did not accept is never activated."""
    reply, config = object(), object()  # the machine never looks inside them
    m = Lifecycle(rng=lambda: 0.0)
    m.start(0.0)
    m.on_timer(0.0)
    m.on_response(0.1, NonceOk("n"))
    commands = m.on_response(0.2, EnrollOk(1, 30, reply))  # type: ignore[arg-type]
    assert commands == [Activate(ActivateSource.ENROLL, reply)]  # type: ignore[arg-type]
    assert commands[0].received is reply  # type: ignore[union-attr]
    m.on_timer(30.2)
    assert m.on_response(30.3, HeartbeatOk(2)) == [FetchConfig()]
    commands = m.on_response(30.4, ConfigOk(2, 30, config))  # type: ignore[arg-type]
    assert commands[0].received is config  # type: ignore[union-attr]
