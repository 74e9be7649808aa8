"""The kernel fast path's control side without a kernel: the netlink element on the fake
kernel, the gateway spec and config switch, the manager's order, counters and status."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cjb.common.netlink import Link, Namespace, NetworkSpec, TcBpf, Veth, VethPeer, apply
from cjb.common.netlink.fake import FakeKernel
from cjb.gateway.dataplane.bpf.counters import COUNTER_NAMES, FastPathCounters
from cjb.gateway.dataplane.bpf.fastpath import SOURCE, FastPathConfig, FastPathError
from cjb.gateway.dataplane.bpf.manager import KernelFastPaths
from cjb.gateway.dataplane.config import ConfigFileError, load
from cjb.gateway.dataplane.kernel_spec import gateway_spec
from cjb.gateway.dataplane.status import render


def _spec(prog: TcBpf | None) -> NetworkSpec:
    return NetworkSpec(
        "t",
        (
            Namespace(
                None,
                (Link("a", Veth(peer="b"), tc_ingress=prog), Link("b", VethPeer(of="a"))),
            ),
        ),
    )


def test_tc_ingress_is_applied_idempotently_replaced_and_removed() -> None:
    k = FakeKernel()
    first = TcBpf(prog_fd=10, prog_id=5, label="cjb_tunnel_in")
    changes = apply(k, _spec(first))
    assert "(current): attach tc ingress cjb:cjb_tunnel_in#5 on a" in changes
    assert "    tc ingress bpf cjb:cjb_tunnel_in#5" in k.render().splitlines()
    assert apply(k, _spec(first)) == []
    # A new load has a new id: replaced, not stacked.
    changes = apply(k, _spec(TcBpf(prog_fd=11, prog_id=6, label="cjb_tunnel_in")))
    assert changes == ["(current): attach tc ingress cjb:cjb_tunnel_in#6 on a"]
    assert apply(k, _spec(None)) == ["(current): detach tc ingress cjb:cjb_tunnel_in#6 from a"]
    assert "tc ingress" not in k.render()
    assert apply(k, _spec(None)) == []


def test_someone_elses_filter_is_left_alone() -> None:
    k = FakeKernel()
    apply(k, _spec(None))
    k._get(None).tc_ingress["a"] = "theirs.o:[classifier]"
    assert apply(k, _spec(None)) == []


GW = {
    "underlay": {"address": "fd63:6a62::2", "device": "wan0"},
    "service_netns": "svc",
    "state_dir": "/nonexistent/cjb-test-gw",
    "fast_path": "kernel",
    "tenants": {
        "acme": {"vni": 7, "appliance": "fd63:6a62:1::2"},
        "globex": {"vni": 8, "appliance": "fd63:6a62:2::2", "fast_path": "userspace"},
    },
}


def _load(tmp_path: Path, data: object) -> object:
    path = tmp_path / "gw.json"
    path.write_text(json.dumps(data))
    return load(path)


def test_fast_path_switch_is_global_with_a_per_tenant_override(tmp_path: Path) -> None:
    cfg = _load(tmp_path, GW)
    modes = {t.name: t.fast_path for t in cfg.tenants}  # type: ignore[attr-defined]
    assert modes == {"acme": "kernel", "globex": "userspace"}
    plain = dict(GW)
    del plain["fast_path"]
    cfg = _load(tmp_path, plain)
    # The kernel fast path is the default; a tenant can still opt out.
    modes = {t.name: t.fast_path for t in cfg.tenants}  # type: ignore[attr-defined]
    assert modes == {"acme": "kernel", "globex": "userspace"}
    assert cfg.fast_path == "kernel"  # type: ignore[attr-defined]


def test_bad_fast_path_names_the_field(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(GW))
    bad["tenants"]["acme"]["fast_path"] = "xdp"
    with pytest.raises(ConfigFileError, match=r"tenants\.acme\.fast_path"):
        _load(tmp_path, bad)


def test_gateway_spec_puts_programs_on_the_gateway_ports_only(tmp_path: Path) -> None:
    cfg = _load(tmp_path, GW)
    prog = TcBpf(3, 9, "cjb_tunnel_in")
    spec = gateway_spec(cfg, {"vx-acme": prog})  # type: ignore[arg-type]
    found = {(ns.name, link.name): link.tc_ingress for ns in spec.namespaces for link in ns.links}
    assert found[(None, "vx-acme")] == prog
    assert {k for k, v in found.items() if v is not None} == {(None, "vx-acme")}


@dataclass
class FakeFastPath:
    ids: dict[str, int]
    configured: list[FastPathConfig] = field(default_factory=list)
    filtered: list[tuple[object, str]] = field(default_factory=list)
    closed: bool = False

    def program_fd(self, port: str) -> int:
        return 100 + self.ids[port]

    def program_id(self, port: str) -> int:
        return self.ids[port]

    def program_name(self, port: str) -> str:
        return f"cjb_{port}_in"

    def configure(self, config: FastPathConfig) -> None:
        self.configured.append(config)

    def attach_skip_filter(self, sock: object, port: str) -> None:
        self.filtered.append((sock, port))

    def counters(self) -> FastPathCounters:
        return FastPathCounters(tuple(range(len(COUNTER_NAMES))))

    def disable(self) -> None:
        self.configured.append(None)  # type: ignore[arg-type]

    def close(self) -> None:
        assert self.configured[-1:] == [None], "closed without disabling first"
        self.closed = True


def test_manager_loads_attaches_filters_activates_and_closes(tmp_path: Path) -> None:
    cfg = _load(tmp_path, GW)
    loaded: list[FakeFastPath] = []

    def loader() -> FakeFastPath:
        fp = FakeFastPath({"tunnel": 1, "service": 2, "native": 3})
        loaded.append(fp)
        return fp

    index = {"vx-acme": 11, "sl-acme": 12, "nl-acme": 13}
    m = KernelFastPaths(loader=loader, ifindex=index.__getitem__)  # type: ignore[arg-type]
    tenants = cfg.tenants  # type: ignore[attr-defined]
    tc = m.attachments(tenants)
    assert sorted(tc) == ["nl-acme", "sl-acme", "vx-acme"]
    assert tc["vx-acme"].filter_name == "cjb:cjb_tunnel_in#1"
    assert loaded[0].configured == []  # disabled until the workers carry their filters
    m.filter_sockets("acme", {"tunnel": "sock-t", "service": "sock-s"})
    assert loaded[0].filtered == [("sock-t", "tunnel"), ("sock-s", "service")]
    m.activate(tenants)
    # With the service-host links' MACs (service_mac(vni 7, link 1 and 2)): unicast from
    # the tunnel to any other MAC goes to the slow path's LAN guard.
    macs = (bytes.fromhex("02c700000701"), bytes.fromhex("02c700000702"))
    assert loaded[0].configured == [FastPathConfig(11, 12, 13, 1500, 1520, macs)]
    assert m.attachments(tenants) == tc and len(loaded) == 1  # kept, not reloaded
    status = m.status("acme")
    assert status is not None and status["errors"] == COUNTER_NAMES.index("errors")
    assert m.attachments(()) == {} and loaded[0].closed


def test_manager_falls_back_to_userspace_when_the_object_cannot_load(tmp_path: Path) -> None:
    cfg = _load(tmp_path, GW)

    def loader() -> FakeFastPath:
        raise FastPathError("xlat.bpf.o is missing: run `make bpf`")

    m = KernelFastPaths(loader=loader)  # type: ignore[arg-type]
    assert m.attachments(cfg.tenants) == {}  # type: ignore[attr-defined]
    assert "make bpf" in m.errors["acme"] and "running userspace" in m.errors["acme"]


def test_counters_sum_over_cpus_and_render_in_status() -> None:
    per_cpu = [[i, 1] for i in range(len(COUNTER_NAMES))]
    c = FastPathCounters.from_per_cpu(per_cpu)
    assert c["to_service_frames"] == 1 and c["errors"] == COUNTER_NAMES.index("errors") + 1
    status = {
        "pid": 1,
        "updated": time.time(),
        "tenants": {
            "acme": {"state": "running", "fast_path": {"mode": "kernel", "counters": c.as_dict()}}
        },
    }
    text = render(status, Path("/x"))
    assert "kernel fast path: to service 1 frames 2 bytes, to LAN 3 frames 4 bytes" in text


def test_program_source_names_every_counter_in_order() -> None:
    text = SOURCE.read_text()
    enum = text[text.index("enum {") : text.index("C_COUNT")]
    slots = [line.strip().rstrip(",") for line in enum.splitlines()[1:] if line.strip()]
    assert [s.removeprefix("C_").lower() for s in slots] == [
        n.replace("slow_path_", "slow_") for n in COUNTER_NAMES
    ]


def test_a_missing_object_says_how_to_build_it(tmp_path: Path) -> None:
    from cjb.gateway.dataplane.bpf.fastpath import FastPath

    with pytest.raises(FastPathError, match=r"missing: run `make bpf`"):
        FastPath(tmp_path / "xlat.bpf.o")


def test_config_map_layout_matches_struct_cjb_cfg() -> None:
    packed = FastPathConfig(1, 2, 3, 1500, 1520).pack()
    assert len(packed) == 36  # six __u32 and two MACs in struct cjb_cfg
    assert packed[20:24] == (1).to_bytes(4, sys.byteorder)  # `enabled`, host byte order
    assert packed[24:] == bytes(12)  # no cloud MACs: no check
    one = FastPathConfig(1, 2, 3, 1500, 1520, (b"\x02\xc7\x00\x00\x07\x01",)).pack()
    assert one[24:] == b"\x02\xc7\x00\x00\x07\x01" * 2  # the unused slot repeats it


def test_a_worker_without_filters_keeps_the_fast_path_disabled(tmp_path: Path) -> None:
    cfg = _load(tmp_path, GW)
    fp = FakeFastPath({"tunnel": 1, "service": 2, "native": 3})

    def refuse(sock: object, port: str) -> None:
        raise OSError(1, "Operation not permitted")

    fp.attach_skip_filter = refuse  # type: ignore[method-assign]
    m = KernelFastPaths(loader=lambda: fp, ifindex=lambda _n: 1)  # type: ignore[arg-type,return-value]
    m.attachments(cfg.tenants)  # type: ignore[attr-defined]
    m.filter_sockets("acme", {"tunnel": "sock"})
    m.activate(cfg.tenants)  # type: ignore[attr-defined]
    assert fp.configured == [] and "left disabled" in m.errors["acme"]


def test_summary_says_kernel_or_userspace_with_the_reason(tmp_path: Path) -> None:
    cfg = _load(tmp_path, GW)
    tenants = cfg.tenants  # type: ignore[attr-defined]
    fp = FakeFastPath({"tunnel": 1, "service": 2, "native": 3})
    m = KernelFastPaths(loader=lambda: fp, ifindex=lambda _n: 1)  # type: ignore[arg-type,return-value]
    m.attachments(tenants)
    m.filter_sockets("acme", {"tunnel": "sock"})
    m.activate(tenants)
    assert m.summary(tenants) == {"mode": "kernel", "kernel_tenants": 1}

    def missing() -> FakeFastPath:
        raise FastPathError("/x/xlat.bpf.o (CJB_BPF_OBJECT) is missing")

    down = KernelFastPaths(loader=missing)  # type: ignore[arg-type]
    down.attachments(tenants)
    summary = down.summary(tenants)
    assert summary["mode"] == "userspace" and summary["kernel_tenants"] == 0
    assert "xlat.bpf.o (CJB_BPF_OBJECT) is missing" in str(summary["reason"])
    status = {"pid": 1, "updated": time.time(), "fast_path": summary, "tenants": {}}
    assert "fast path: userspace (reason: kernel fast path unavailable" in render(
        status, Path("/x")
    )
    ok = {"pid": 1, "updated": time.time(), "fast_path": m.summary(tenants), "tenants": {}}
    assert "\nfast path: kernel\n" in render(ok, Path("/x"))
    # The same in /metrics: a gauge per mode, and how many tenants the kernel carries.
    from cjb.gateway.dataplane.metrics import StatusFileCollector

    path = tmp_path / "status.json"
    for data, kernel, count in ((ok, 1, 1), (status, 0, 0)):
        path.write_text(json.dumps(data))
        samples = {s.name: s.value for f in StatusFileCollector(path).collect() for s in f.samples}
        assert samples["cjb_fast_path_kernel"] == kernel
        assert samples["cjb_fast_path_kernel_tenants"] == count


def test_the_object_is_found_next_to_the_source_else_built_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from cjb.common import bpf_object

    monkeypatch.delenv("CJB_TEST_OBJ", raising=False)
    tree = tmp_path / "tree"
    tree.mkdir()
    source = tree / "x.bpf.c"
    source.write_text("int x;\n")
    cache = tmp_path / "cache"
    prebuilt = tree / "x.bpf.o"
    prebuilt.write_bytes(b"obj")
    assert bpf_object.locate(source, override_env="CJB_TEST_OBJ", cache_dirs=[cache]) == prebuilt
    prebuilt.unlink()
    (cache).mkdir()
    (cache / "x.bpf.o").write_bytes(b"obj")
    found = bpf_object.locate(source, override_env="CJB_TEST_OBJ", cache_dirs=[cache])
    assert found == cache / "x.bpf.o"
    (cache / "x.bpf.o").unlink()
    with pytest.raises(bpf_object.BpfBuildError, match=r"no built x\.bpf\.o"):
        bpf_object.locate(source, override_env="CJB_TEST_OBJ", cache_dirs=[cache], build=False)
    monkeypatch.setenv("CJB_TEST_OBJ", str(tmp_path / "nothing.o"))
    with pytest.raises(bpf_object.BpfBuildError, match=r"nothing.o \(CJB_TEST_OBJ\) is missing"):
        bpf_object.locate(source, override_env="CJB_TEST_OBJ", cache_dirs=[cache])
    monkeypatch.delenv("CJB_TEST_OBJ")
    if shutil.which("clang") is None:
        pytest.skip("clang not installed: the build step cannot run here")
    # The source tree cannot take the object (here: a directory in its way, old enough not
    # to count as fresh; in production: a read-only install): it is built into the cache.
    (tree / "x.bpf.o").mkdir()
    os.utime(tree / "x.bpf.o", (0, 0))
    built = bpf_object.locate(source, override_env="CJB_TEST_OBJ", cache_dirs=[cache])
    assert built == cache / "x.bpf.o" and built.stat().st_size > 0
    assert not [p for p in tree.iterdir() if p.name.endswith(".tmp")]  # no temporary left
