"""The enrolled agent's HTTP exchange with the gateway: each request the life cycle sends,
run on one worker thread and turned into the `Result` the machine expects.

The calls run off the loop's thread so a gateway that times out never delays the repair
tick; the loop polls `collect()` for the outcome. Replies travel inside the results
(`EnrollOk.response`, `ConfigOk.config`), so the machine hands them back in `Activate`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from cjb.appliance.control_client import ControlClient
from cjb.appliance.keys import FactoryIdentity
from cjb.appliance.lifecycle import (
    ConfigOk,
    EnrollOk,
    Failed,
    Failure,
    FailureKind,
    HeartbeatOk,
    NonceOk,
    Result,
)
from cjb.common.control.protocol import EnrollRequest, Heartbeat

log = logging.getLogger("cjb.appliance")


class ControlExchange:
    def __init__(self, client: ControlClient) -> None:
        self.client = client
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: Future[Result] | None = None

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="cjb-http")

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def busy(self) -> bool:
        return self._inflight is not None

    def submit(self, call: Callable[[], Result], answer: Callable[[Result], None]) -> None:
        """Run `call` on the worker; without a running loop (tests driving steps by hand),
        run it now and `answer` at once."""

        def guarded() -> Result:
            try:
                return call()
            except Exception as exc:  # a bug in an adapter must not stop the agent
                log.exception("control call failed")
                return Failed(Failure(FailureKind.BAD_RESPONSE, f"{type(exc).__name__}: {exc}"))

        if self._pool is None:
            answer(guarded())
            return
        self._inflight = self._pool.submit(guarded)

    def collect(self) -> Result | None:
        """The outcome of the call in flight, once it is done."""
        future = self._inflight
        if future is None or not future.done():
            return None
        self._inflight = None
        return future.result()

    # -- the calls ----------------------------------------------------------------------

    def nonce(self) -> Result:
        got = self.client.nonce()
        return Failed(got) if isinstance(got, Failure) else NonceOk(got.nonce)

    def enroll_call(
        self, request: EnrollRequest, identity: FactoryIdentity
    ) -> Callable[[], Result]:
        def enroll() -> Result:
            got = self.client.enroll(request, identity)
            if isinstance(got, Failure):
                return Failed(got)
            return EnrollOk(got.config.config_version, got.config.heartbeat_seconds, got)

        return enroll

    def heartbeat_call(self, beat: Heartbeat) -> Callable[[], Result]:
        def heartbeat() -> Result:
            got = self.client.heartbeat(beat)
            return Failed(got) if isinstance(got, Failure) else HeartbeatOk(got.config_version)

        return heartbeat

    def fetch_config(self) -> Result:
        config = self.client.config()
        if isinstance(config, Failure):
            return Failed(config)
        return ConfigOk(config.config_version, config.heartbeat_seconds, config)
