"""Step lines with elapsed time, and subprocesses whose output becomes progress lines.

The clock and the output are injected so tests can see exact lines without sleeping.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from cjb.appliance.image import ImageError

Echo = Callable[[str], None]
Clock = Callable[[], float]


class Progress:
    def __init__(self, echo: Echo, clock: Clock = time.monotonic, total: int = 0) -> None:
        self.echo = echo
        self.clock = clock
        self.total = total
        self.number = 0
        self.started = clock()
        self.timings: dict[str, float] = {}
        self._step_start = self.started

    def elapsed(self) -> float:
        return self.clock() - self._step_start

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        self.number += 1
        of = f"/{self.total}" if self.total else ""
        self.echo(f"[{self.number}{of}] {title} ...")
        self._step_start = self.clock()
        yield
        took = self.clock() - self._step_start
        self.timings[title] = took
        self.echo(f"[{self.number}{of}] {title}: done in {took:.1f} s")

    def note(self, message: str) -> None:
        self.echo(f"    [{self.elapsed():6.1f} s] {message}")

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        what: str,
        fix: str = "",
        quiet: bool = False,
        input_text: str | None = None,
    ) -> str:
        """Run `argv`, turning each output line into a progress note; raise ImageError on
        failure with the last lines of output, what failed and how to fix it."""
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=dict(env) if env is not None else None,
            )
        except FileNotFoundError:
            raise ImageError(f"{what}: {argv[0]} is not installed. {fix}".strip()) from None
        if input_text is not None:
            assert proc.stdin is not None
            proc.stdin.write(input_text)
            proc.stdin.close()
        lines: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            lines.append(line)
            if not quiet and line:
                self.note(line)
        if proc.wait() != 0:
            tail = "\n".join(lines[-15:])
            raise ImageError(f"{what} failed (exit {proc.returncode}):\n{tail}\n{fix}".rstrip())
        return "\n".join(lines)
