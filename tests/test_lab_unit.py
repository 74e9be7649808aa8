"""The lab without a kernel: topology spec, configs, and the refusals of `up`."""

from __future__ import annotations

from pathlib import Path

import pytest

from cjb.common.netlink import apply
from cjb.common.netlink.fake import FakeKernel
from cjb.gateway.dataplane.config import from_model, read_model
from cjb.lab import control, demo
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


def test_demo_short_help_says_what_it_does() -> None:
    from cjb.cli.lab import lab

    short = lab.commands["demo"].get_short_help_str(limit=200)
    assert "Fig. 7" in short and "both paths" in short


CURL_I = (
    "HTTP/1.1 200 OK\r\nserver: cjb-reference/1\r\nx-cjb-tenant: tenant2\r\n"
    "x-cjb-interface: {ifname}\r\nx-cjb-path: {path}\r\n\r\n"
    "<html><h1>Hello, tenant tenant2</h1></html>\n"
)


def _fetch(ifname: str, path: str) -> demo.Fetch:
    return demo.parse_response("u", CURL_I.format(ifname=ifname, path=path))


def test_demo_reads_tenant_interface_and_path_from_curl_i() -> None:
    f = _fetch("n-tenant2", "native")
    assert (f.tenant, f.header_tenant, f.ifname, f.path) == (
        "tenant2",
        "tenant2",
        "n-tenant2",
        "native",
    )
    assert f.detail == "Hello, tenant tenant2"


def test_demo_row_is_ok_only_with_the_right_interface_of_each_path() -> None:
    good = demo.Row("tenant2", _fetch("tenant2", "translated"), _fetch("n-tenant2", "native"))
    assert good.ok
    swapped = demo.Row("tenant2", _fetch("n-tenant2", "native"), _fetch("tenant2", "translated"))
    assert not swapped.ok
    foreign = demo.Row("tenant2", _fetch("tenant1", "translated"), _fetch("n-tenant2", "native"))
    assert not foreign.ok
    # Tenant 1's row answered by tenant 2's pages: the isolation failure the demo exits 2 on.
    crossed = demo.Row("tenant1", good.translated, good.native)
    assert demo.crossed([crossed]) == [
        "tenant1 got tenant2's page from u",
        "tenant1 got tenant2's page from u",
    ]
    assert demo.crossed([good]) == []


def test_demo_table_heads_columns_with_the_papers_commands() -> None:
    good = demo.Row("tenant1", _fetch("tenant1", "translated"), _fetch("n-tenant1", "native"))
    text = demo.render([good])
    header = text.splitlines()[0]
    assert "curl http://192.168.0.100:80/" in header
    assert "curl http://fe80::192.168.0.100%eth0:80/" in header
    assert "[n-tenant1, native]" in text and "[tenant1, translated]" in text
    assert "curl -g -sS -i -m 5 'http://[fe80::192.168.0.100%eth0]:80/'" in text
