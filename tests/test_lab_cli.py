"""`cjb lab down` argument handling: one run by id, every run only with --all, and the only run
when there is exactly one. The teardown itself is stubbed here; the lab tests run it for real."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from click.testing import CliRunner, Result

from cjb.cli.lab import lab
from cjb.lab import control, status
from cjb.lab import state as lab_state
from cjb.lab.state import LabState

NODES = ("site1", "gateway")


class Machine:
    """The lab runs on a pretend machine, and the `down` calls made on it."""

    def __init__(self, recorded: list[str], stray_namespaces: tuple[str, ...] = ()) -> None:
        self.recorded = recorded
        self.namespaces = {f"cjblab{r}-{n}" for r in recorded for n in NODES}
        self.namespaces |= set(stray_namespaces)
        self.calls: list[str | None] = []
        self.remaining: list[str] = []

    def runs(self) -> list[LabState]:
        return [
            LabState(r, 1, False, {n: f"cjblab{r}-{n}" for n in NODES}, complete=True)
            for r in self.recorded
        ]

    def down(self, log: Callable[[str], None] = print, *, only: str | None) -> list[str]:
        self.calls.append(only)
        return self.remaining


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Machine]:
    def make(recorded: list[str], stray_namespaces: tuple[str, ...] = ()) -> Machine:
        m = Machine(recorded, stray_namespaces)
        monkeypatch.setattr(control, "down", m.down)
        monkeypatch.setattr(control, "lab_namespaces", lambda: set(m.namespaces))
        monkeypatch.setattr(lab_state, "runs", m.runs)
        monkeypatch.setattr(status, "lab_namespaces", lambda: set(m.namespaces))
        monkeypatch.setattr(status, "runs", m.runs)
        return m

    return make


def _down(*args: str) -> Result:
    return CliRunner().invoke(lab, ["down", *args])


def test_run_id_removes_only_that_run(machine: Callable[..., Machine]) -> None:
    m = machine(["1a2b", "3c4d"])
    r = _down("3c4d")
    assert r.exit_code == 0, r.output
    assert m.calls == ["3c4d"]
    assert "lab run 3c4d is down" in r.output


def test_bare_down_with_several_runs_refuses_and_names_both_choices(
    machine: Callable[..., Machine],
) -> None:
    m = machine(["1a2b"], stray_namespaces=("cjblab9f9f-site1",))  # a crashed run, no record
    r = _down()
    assert r.exit_code == 2, r.output  # a usage error: nothing was removed
    assert m.calls == []
    assert "2 lab runs on this machine (1a2b, 9f9f)" in r.output
    assert "cjb lab down RUN_ID" in r.output and "cjb lab down --all" in r.output


def test_bare_down_takes_the_only_run_and_says_which(machine: Callable[..., Machine]) -> None:
    m = machine(["1a2b"])
    r = _down()
    assert r.exit_code == 0, r.output
    assert m.calls == ["1a2b"]
    assert "removing lab run 1a2b, the only run on this machine" in r.output


def test_bare_down_with_no_run_is_a_no_op(machine: Callable[..., Machine]) -> None:
    m = machine([])
    r = _down()
    assert r.exit_code == 0, r.output
    assert m.calls == []
    assert "no lab run on this machine" in r.output and "--all" in r.output


def test_all_removes_every_run(machine: Callable[..., Machine]) -> None:
    m = machine(["1a2b", "3c4d"])
    r = _down("--all")
    assert r.exit_code == 0, r.output
    assert m.calls == [None]
    assert "no namespace, link, nftables table or process of any run remains" in r.output


def test_run_id_and_all_together_are_refused(machine: Callable[..., Machine]) -> None:
    m = machine(["1a2b"])
    r = _down("1a2b", "--all")
    assert r.exit_code == 2 and "RUN_ID or --all, not both" in r.output
    assert m.calls == []


@pytest.mark.parametrize("bad", ["cjblab1a2b", "1A2B", "1a2", "../x"])
def test_a_malformed_run_id_is_refused_with_the_form(
    machine: Callable[..., Machine], bad: str
) -> None:
    m = machine(["1a2b"])
    r = _down(bad)
    assert r.exit_code == 2, r.output
    assert "is not a lab run id: 4 hex digits" in r.output
    assert m.calls == []


def test_a_run_already_gone_is_not_an_error(machine: Callable[..., Machine]) -> None:
    # Teardown in traps and scripts repeats: the second `down` of a run succeeds, and says so.
    m = machine(["1a2b"])
    r = _down("5e6f")
    assert r.exit_code == 0, r.output
    assert "no lab run 5e6f on this machine (runs present: 1a2b)" in r.output
    assert m.calls == ["5e6f"]  # still swept: a crashed run may have left a WireGuard socket


def test_leftovers_fail_the_command_and_are_named(machine: Callable[..., Machine]) -> None:
    m = machine(["1a2b"])
    m.remaining = ["namespace cjblab1a2b-site1"]
    r = _down("1a2b")
    assert r.exit_code == 1
    assert "still present after down: namespace cjblab1a2b-site1" in r.output


def test_status_names_the_run_to_remove(machine: Callable[..., Machine]) -> None:
    machine(["1a2b"], stray_namespaces=("cjblab9f9f-site1",))
    text = status.render()
    assert "namespaces of no recorded run (remove with `cjb lab down 9f9f`)" in text
    assert "[up]" in text and "1a2b" in text


def test_down_in_python_has_no_silent_remove_everything() -> None:
    with pytest.raises(TypeError, match="only"):
        control.down(lambda _m: None)  # type: ignore[call-arg]
