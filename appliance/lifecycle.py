"""The appliance's control life cycle as a sans-IO state machine (h11/aioquic style).

No sockets, no clocks, no randomness of its own: the adapter passes `now` (monotonic
seconds) and a random source in, executes the `Command`s that come out, and feeds each
request's outcome back with `on_response`. At most one request is outstanding at a time.

    phase            event                         -> phase            commands
    unenrolled       timer due                     -> requesting-nonce RequestNonce
    requesting-nonce NonceOk                       -> enrolling        Enroll(nonce)
    requesting-nonce Failed                        -> unenrolled       (wait backoff)
    enrolling        EnrollOk(reply)               -> enrolled         Activate(enroll, reply)
    enrolling        Failed                        -> unenrolled       (wait backoff)
    enrolled         timer due                     -> enrolled         SendHeartbeat
    enrolled         HeartbeatOk(newer version)    -> enrolled         FetchConfig
    enrolled         HeartbeatOk(same version)     -> enrolled         (next heartbeat)
    enrolled         ConfigOk(config)              -> enrolled         Activate(config, config)
    enrolled         Failed(auth: 401/403)         -> unenrolled       Forget (re-enroll now)
    enrolled         Failed(other)                 -> enrolled         (retry; Reconnect after
                                                                        `reconnect_after` misses)

Retries use exponential backoff with full jitter (backoff.py). The status line says what the
machine is doing or waiting for, in words an installer can act on.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from cjb.appliance.backoff import Backoff, Random
from cjb.common.control.protocol import DeviceConfig, EnrollResponse


class LifecycleError(Exception):
    """The adapter fed a result that answers no outstanding request (a bug, not input)."""


class Phase(enum.Enum):
    UNENROLLED = "unenrolled"
    REQUESTING_NONCE = "requesting-nonce"
    ENROLLING = "enrolling"
    ENROLLED = "enrolled"


class FailureKind(enum.Enum):
    UNREACHABLE = "unreachable"  # DNS, connect, timeout: the WAN or the gateway is down
    UNTRUSTED = "untrusted"  # the server's certificate does not verify
    REFUSED = "refused"  # 4xx on enrollment: unknown serial, clone, stale nonce...
    AUTH = "auth"  # 401/403 on /v1/device/*: the device certificate is revoked or expired
    SERVER = "server"  # 5xx
    BAD_RESPONSE = "bad-response"  # not the JSON the protocol promises
    LAN = "lan"  # the LAN facts are not known yet (no address on the bridge, no free address)


@dataclass(frozen=True, slots=True)
class Failure:
    kind: FailureKind
    detail: str
    status: int | None = None  # HTTP status, when there was one
    code: str | None = None  # ErrorBody.error, when there was one

    def describe(self) -> str:
        http = f"HTTP {self.status}: " if self.status is not None else ""
        code = f"{self.code}: " if self.code else ""
        return {
            FailureKind.UNREACHABLE: f"gateway unreachable ({self.detail})",
            FailureKind.UNTRUSTED: f"gateway certificate not trusted ({self.detail})",
            FailureKind.REFUSED: f"refused by the gateway ({http}{code}{self.detail})",
            FailureKind.AUTH: f"device certificate refused ({http}{code}{self.detail})",
            FailureKind.SERVER: f"gateway error ({http}{self.detail})",
            FailureKind.BAD_RESPONSE: f"invalid response from the gateway ({self.detail})",
            FailureKind.LAN: f"LAN not ready ({self.detail})",
        }[self.kind]


# -- commands (machine -> adapter) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestNonce:
    pass


@dataclass(frozen=True, slots=True)
class Enroll:
    nonce: str


@dataclass(frozen=True, slots=True)
class SendHeartbeat:
    pass


@dataclass(frozen=True, slots=True)
class FetchConfig:
    pass


class ActivateSource(enum.Enum):
    RESTORED = "restored"  # from disk at start: no enrollment needed
    ENROLL = "enroll"  # the EnrollResponse just received
    CONFIG = "config"  # the DeviceConfig just fetched


@dataclass(frozen=True, slots=True)
class Activate:
    """Persist what was just received (atomically) and build the tunnel from it.

    `received` is the reply the machine accepted (the EnrollResponse or the DeviceConfig);
    None when restoring from disk. The adapter activates exactly this, nothing kept aside.
    """

    source: ActivateSource
    received: EnrollResponse | DeviceConfig | None = None


@dataclass(frozen=True, slots=True)
class Forget:
    """Drop the device certificate and enrolled config, take the tunnel down."""

    reason: str


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Rebuild the tunnel (re-resolve the endpoint): the gateway has not answered for a while."""

    reason: str


Request = RequestNonce | Enroll | SendHeartbeat | FetchConfig
Command = Request | Activate | Forget | Reconnect

# -- results (adapter -> machine) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NonceOk:
    nonce: str


@dataclass(frozen=True, slots=True)
class EnrollOk:
    config_version: int
    heartbeat_seconds: float
    response: EnrollResponse | None = None  # handed back in Activate


@dataclass(frozen=True, slots=True)
class ConfigOk:
    config_version: int
    heartbeat_seconds: float
    config: DeviceConfig | None = None  # handed back in Activate


@dataclass(frozen=True, slots=True)
class HeartbeatOk:
    config_version: int


@dataclass(frozen=True, slots=True)
class Failed:
    failure: Failure


Result = NonceOk | EnrollOk | ConfigOk | HeartbeatOk | Failed

_ANSWERS: dict[type, tuple[type, ...]] = {
    RequestNonce: (NonceOk, Failed),
    Enroll: (EnrollOk, Failed),
    SendHeartbeat: (HeartbeatOk, Failed),
    FetchConfig: (ConfigOk, Failed),
}


@dataclass(frozen=True, slots=True)
class Restored:
    """What the machine needs to know about an enrollment persisted by an earlier run."""

    config_version: int
    heartbeat_seconds: float


@dataclass(slots=True)
class Counters:
    enroll_attempts: int = 0
    enrollments: int = 0
    heartbeats_ok: int = 0
    heartbeats_failed: int = 0
    config_fetches: int = 0
    reenrollments: int = 0
    reconnects: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass
class Lifecycle:
    """The machine. Create it, call `start(now)`, then drive it with the three methods."""

    rng: Random
    backoff: Backoff = field(default_factory=Backoff)
    restored: Restored | None = None
    reconnect_after: int = 3  # heartbeats missed in a row before the tunnel is rebuilt

    phase: Phase = Phase.UNENROLLED
    counters: Counters = field(default_factory=Counters)
    config_version: int | None = None
    heartbeat_seconds: float = 30.0
    last_failure: Failure | None = None
    failures: int = 0  # in a row, for the current phase's backoff
    last_heartbeat_ok: float | None = None
    _due: float | None = None  # when the next request goes out; None: one is outstanding
    _outstanding: Request | None = None

    # -- driving ------------------------------------------------------------------------

    def start(self, now: float) -> list[Command]:
        self._due = now
        if self.restored is None:
            return []
        self.phase = Phase.ENROLLED
        self.config_version = self.restored.config_version
        self.heartbeat_seconds = self.restored.heartbeat_seconds
        # Heartbeat right away: a revocation or config change while we were down shows now.
        return [Activate(ActivateSource.RESTORED)]

    def next_deadline(self) -> float | None:
        return self._due

    def on_timer(self, now: float) -> list[Command]:
        if self._due is None or now < self._due:
            return []
        if self.phase is Phase.ENROLLED:
            return [self._send(SendHeartbeat())]
        self.phase = Phase.REQUESTING_NONCE
        self.counters.enroll_attempts += 1
        return [self._send(RequestNonce())]

    def on_response(self, now: float, result: Result) -> list[Command]:
        request = self._outstanding
        if request is None or not isinstance(result, _ANSWERS[type(request)]):
            raise LifecycleError(f"result {result!r} answers no outstanding request ({request!r})")
        self._outstanding = None
        if isinstance(result, Failed):
            return self._failed(now, request, result.failure)
        if isinstance(result, NonceOk):
            self.phase = Phase.ENROLLING
            return [self._send(Enroll(result.nonce))]
        if isinstance(result, EnrollOk | ConfigOk):
            received: EnrollResponse | DeviceConfig | None
            if isinstance(result, EnrollOk):
                self.counters.enrollments += 1
                source, received = ActivateSource.ENROLL, result.response
            else:
                self.counters.config_fetches += 1
                source, received = ActivateSource.CONFIG, result.config
            self.phase = Phase.ENROLLED
            self.config_version = result.config_version
            self.heartbeat_seconds = result.heartbeat_seconds
            self._succeeded(now)
            self._due = now + self.heartbeat_seconds
            return [Activate(source, received)]
        # HeartbeatOk
        self.counters.heartbeats_ok += 1
        self.last_heartbeat_ok = now
        self._succeeded(now)
        if self.config_version is None or result.config_version > self.config_version:
            return [self._send(FetchConfig())]
        self._due = now + self.heartbeat_seconds
        return []

    # -- internals ----------------------------------------------------------------------

    def _send(self, request: Request) -> Request:
        self._outstanding = request
        self._due = None
        return request

    def _succeeded(self, now: float) -> None:
        self.failures = 0
        self.last_failure = None

    def _failed(self, now: float, request: Request, failure: Failure) -> list[Command]:
        self.last_failure = failure
        self.failures += 1
        wait = self.backoff.delay(self.failures, self.rng)
        if self.phase is not Phase.ENROLLED:
            self.phase = Phase.UNENROLLED
            self._due = now + wait
            return []
        if isinstance(request, SendHeartbeat):
            self.counters.heartbeats_failed += 1
        if failure.kind is FailureKind.AUTH:
            # Revoked or expired: our credentials are worthless; enroll again, right away
            # (the gateway decides whether this unit may come back).
            self.counters.reenrollments += 1
            self.phase = Phase.UNENROLLED
            self.config_version = None
            self.failures = 0
            self._due = now
            return [Forget(failure.describe())]
        # Keep the tunnel (WireGuard rides out short WAN cuts by itself), but never wait
        # longer than one heartbeat interval between tries.
        self._due = now + min(wait, self.heartbeat_seconds)
        if self.failures % self.reconnect_after == 0:
            self.counters.reconnects += 1
            return [Reconnect(f"{self.failures} requests failed in a row: {failure.describe()}")]
        return []

    # -- status -------------------------------------------------------------------------

    def status_line(self, now: float) -> str:
        due = self._due
        if self.phase is Phase.REQUESTING_NONCE:
            return f"enrolling (attempt {self.counters.enroll_attempts}): asking for a nonce"
        if self.phase is Phase.ENROLLING:
            return (
                f"enrolling (attempt {self.counters.enroll_attempts}): "
                "sending the signed enrollment request"
            )
        if self.phase is Phase.UNENROLLED:
            if self.last_failure is not None and due is not None and due > now:
                return (
                    f"waiting {math.ceil(due - now)} s before retry {self.failures}: "
                    f"{self.last_failure.describe()}"
                )
            return "not enrolled: enrolling now"
        version = f"enrolled, config version {self.config_version}"
        if isinstance(self._outstanding, FetchConfig):
            return f"{version}: fetching the new configuration"
        if self.last_failure is not None:
            wait = "" if due is None else f"; next try in {max(0, math.ceil(due - now))} s"
            return (
                f"{version}; {self.failures} request(s) failed in a row: "
                f"{self.last_failure.describe()}{wait}"
            )
        if self.last_heartbeat_ok is None:
            return f"{version}; first heartbeat pending"
        return f"{version}; last heartbeat ok {math.floor(now - self.last_heartbeat_ok)} s ago"
