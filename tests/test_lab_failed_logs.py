"""A failed `cjb lab up` removes its run directory, but keeps wireguard-go's own logs and
puts their place and last lines into the error."""

from __future__ import annotations

from pathlib import Path

import pytest

from cjb.lab import control, state


def test_wireguard_logs_survive_the_failed_runs_removal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state, "LAB_ROOT", tmp_path / "lab")
    monkeypatch.setattr(control, "FAILED_LOGS", tmp_path / "lab-failed")
    run = state.LabState("beef", 1, False, {})
    (run.run_dir / "logs").mkdir(parents=True)
    (run.run_dir / "logs" / "gateway-wireguard.log").write_text("ERROR: UAPI listen: in use\n")
    (run.run_dir / "appliance1").mkdir()
    (run.run_dir / "appliance1" / "wireguard.log").write_text("")
    (run.run_dir / "logs" / "gateway.log").write_text("not a wireguard-go log\n")

    note = control._keep_wireguard_logs(run)
    (run.run_dir / "logs" / "gateway-wireguard.log").unlink()  # what `down` does to the run

    kept = tmp_path / "lab-failed" / "beef"
    assert sorted(p.name for p in kept.iterdir()) == [
        "appliance1_wireguard.log",
        "logs_gateway-wireguard.log",
    ]
    assert (kept / "logs_gateway-wireguard.log").read_text() == "ERROR: UAPI listen: in use\n"
    assert f"kept in {kept / 'logs_gateway-wireguard.log'}:\nERROR: UAPI listen: in use" in note
    assert "appliance1_wireguard.log: (empty)" in note


def test_no_wireguard_logs_no_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "LAB_ROOT", tmp_path / "lab")
    monkeypatch.setattr(control, "FAILED_LOGS", tmp_path / "lab-failed")
    assert control._keep_wireguard_logs(state.LabState("beef", 1, False, {})) == ""
    assert not (tmp_path / "lab-failed").exists()
