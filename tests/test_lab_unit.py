"""The lab without a kernel: topology spec, configs, and the refusals of `up`."""

from __future__ import annotations

from pathlib import Path

import pytest

from cjb.common.netlink import apply
from cjb.common.netlink.fake import FakeKernel
from cjb.gateway.dataplane.config import from_model, read_model
from cjb.lab import control
from cjb.lab.configs import write_configs
from cjb.lab.topology import LabNames, lab_spec


def test_lab_spec_applies_cleanly_and_idempotently() -> None:
    kernel = FakeKernel()
    spec = lab_spec(LabNames("abcd"), 3, same_mac=True)
    apply(kernel, spec)
    text = kernel.render()
    assert text.count("addr 192.168.0.10/24") == 3
    assert "netns cjblababcd-internet" in text
    assert "sysctl net/ipv6/conf/all/forwarding=1" in text
    assert apply(kernel, spec) == []


def test_many_tenants_keep_link_names_within_ifnamsiz(tmp_path: Path) -> None:
    spec = lab_spec(LabNames("abcd"), 200, same_mac=False)
    spec.validate()  # Link() refuses names longer than 15 bytes
    write_configs(LabNames("abcd"), 200, tmp_path)
    cfg = from_model(tmp_path / "gateway.json", read_model(tmp_path / "gateway.json"))
    for t in cfg.tenants:
        for name in (t.tunnel_port, t.service_port, t.native_port, t.native_ifname):
            assert len(name) <= 15


def test_up_refuses_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control.os, "geteuid", lambda: 1000)
    with pytest.raises(control.LabError, match="needs root"):
        control.check_prerequisites()


def test_up_names_the_missing_program_and_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control.os, "geteuid", lambda: 0)
    monkeypatch.setattr(control.shutil, "which", lambda p: None if p == "nft" else "/bin/x")
    with pytest.raises(control.LabError, match=r"missing programs: nft.*install.* nftables"):
        control.check_prerequisites()
