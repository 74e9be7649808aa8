"""What a reconcile reads from the kernel must not grow with the number of tenants.

A link dump decodes every link of a namespace (~0.4 ms each with pyroute2); one dump per
link made the gateway's reconcile O(N^2): a no-op took 10 s at 21 tenants, and 100 tenants
never came up. The reconciler now dumps each namespace once per apply and reads back only
the links it adds. The fake kernel counts the reads; a root test checks that the real
adapter's one-link and all-address reads agree with its dumps.

    gateway netns (current)                      service netns
      vx-tK  (VXLAN, VNI K)                        tK    fe80::c0a8:64/64
      sl-tK  ── veth ───────────────────────────── tK
      nl-tK  ── veth ───────────────────────────── n-tK
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import replace
from pathlib import Path

import pytest

from cjb.common.netlink import Bridge, Link, Namespace, NetworkSpec, Veth, VethPeer, Vxlan, apply
from cjb.common.netlink.fake import FakeKernel
from cjb.common.netlink.kernel import LinkState
from cjb.common.netlink.spec import Interface
from cjb.gateway.dataplane.config import GatewayConfig, TenantSpec
from cjb.gateway.dataplane.kernel_spec import gateway_spec

SERVICE_NS = "svc"


class CountingKernel(FakeKernel):
    """The fake kernel, counting the reads a reconcile makes."""

    def __init__(self) -> None:
        super().__init__()
        self.dumps = 0  # links(ns): every link of a namespace
        self.reads = 0  # link(ns, name): one link
        self.address_dumps = 0  # all_addresses(ns)
        self.address_reads = 0  # addresses(ns, name)

    def links(self, ns: str | None) -> dict[str, LinkState]:
        self.dumps += 1
        return super().links(ns)

    def link(self, ns: str | None, name: str) -> LinkState | None:
        self.reads += 1
        return super().link(ns, name)

    def all_addresses(self, ns: str | None) -> dict[str, set[Interface]]:
        self.address_dumps += 1
        return super().all_addresses(ns)

    def addresses(self, ns: str | None, name: str) -> set[Interface]:
        self.address_reads += 1
        return super().addresses(ns, name)

    def reset(self) -> None:
        self.dumps = self.reads = self.address_dumps = self.address_reads = 0


def config(tenants: int) -> GatewayConfig:
    specs = tuple(
        TenantSpec(
            name=f"t{k}",
            vni=k,
            appliance=ipaddress.IPv6Address(f"fd00::{k:x}"),
            service_ipv4=ipaddress.IPv4Address("192.168.0.100"),
            lan_mtu=1500,
            native_ipv6=True,
            service_ifname=f"t{k}",
        )
        for k in range(1, tenants + 1)
    )
    return GatewayConfig(
        path=Path("/nonexistent/gw.json"),
        underlay_address=ipaddress.IPv6Address("fd00::1"),
        underlay_port=4789,
        underlay_device=None,
        service_netns=SERVICE_NS,
        state_dir=Path("/nonexistent"),
        directory_file=Path("/nonexistent/tenants.json"),
        tenants=specs,
    )


def _kernel_with(tenants: int) -> CountingKernel:
    kernel = CountingKernel()
    kernel.add_namespace(SERVICE_NS)
    apply(kernel, gateway_spec(config(tenants)))
    kernel.reset()
    return kernel


def _reads(kernel: CountingKernel) -> tuple[int, int, int, int]:
    return kernel.dumps, kernel.reads, kernel.address_dumps, kernel.address_reads


@pytest.mark.parametrize("tenants", [3, 60])
def test_a_noop_reconcile_dumps_each_namespace_once(tenants: int) -> None:
    kernel = _kernel_with(tenants)
    assert apply(kernel, gateway_spec(config(tenants))) == []
    # Two namespaces: one link dump and one address dump each, no per-link reads.
    assert _reads(kernel) == (2, 0, 2, 0)


def test_adding_a_tenant_reads_the_same_whatever_the_tenant_count() -> None:
    seen = set()
    for tenants in (3, 30, 90):
        kernel = _kernel_with(tenants)
        changes = apply(kernel, gateway_spec(config(tenants + 1)))
        assert any(f"add link vx-t{tenants + 1}" in c for c in changes)
        seen.add(_reads(kernel))
    # Dumps per namespace, plus the new links read back one by one: vx, sl (+ its peer),
    # nl (+ its peer); nothing proportional to the tenants already there.
    assert seen == {(2, 5, 2, 0)}


def test_building_from_scratch_dumps_each_namespace_once() -> None:
    for tenants in (3, 60):
        kernel = CountingKernel()
        kernel.add_namespace(SERVICE_NS)
        apply(kernel, gateway_spec(config(tenants)))
        assert kernel.dumps == 2 and kernel.address_dumps == 2
        assert kernel.address_reads == 0


def test_deletions_and_recreations_converge_in_one_apply() -> None:
    """After a deletion the snapshots are dropped (a veth's peer dies with it, in another
    namespace) and a recreated link is read back: one apply reaches the spec, the next
    finds nothing to do."""
    kernel = _kernel_with(4)
    apply(kernel, gateway_spec(config(2)))  # removes t3, t4 on both sides
    assert apply(kernel, gateway_spec(config(4))) != []
    assert apply(kernel, gateway_spec(config(4))) == []
    assert "n-t4" in kernel.render() and "vx-t4" in kernel.render()
    moved = config(4)
    moved = replace(moved, tenants=(replace(moved.tenants[0], vni=77), *moved.tenants[1:]))
    changes = apply(kernel, gateway_spec(moved))
    assert any("delete link vx-t1 (kind or parameters differ)" in c for c in changes)
    assert apply(kernel, gateway_spec(moved)) == []
    assert "vx-t1 kind=vxlan mtu=1500 master=- up alias=cjb:gw vni=77" in kernel.render()
    assert "mac=02:c7:00:00:4d:01" in kernel.render()  # the service link follows the VNI


# -- the real adapter ---------------------------------------------------------------------


@pytest.mark.root
def test_real_kernel_single_reads_agree_with_its_dumps() -> None:
    from cjb.common.netlink.nsenter import remove_netns
    from cjb.common.netlink.real import RealKernel

    run = secrets.token_hex(2)
    a, b = f"cjbcost{run}-a", f"cjbcost{run}-b"
    spec = NetworkSpec(
        "cost",
        (
            Namespace(
                a,
                owned=True,
                links=(
                    Link("br0", Bridge(), addresses=(ipaddress.ip_interface("10.9.0.1/24"),)),
                    Link("v0", Veth(peer="p0", peer_netns=b), master="br0", mtu=1400),
                    Link(
                        "vx0",
                        Vxlan(
                            vni=42,
                            local=ipaddress.IPv6Address("fd00::1"),
                            remote=ipaddress.IPv6Address("fd00::2"),
                            port=4789,
                        ),
                    ),
                ),
            ),
            Namespace(
                b,
                owned=True,
                links=(
                    Link(
                        "p0",
                        VethPeer(of="v0"),
                        addresses=(ipaddress.ip_interface("fe80::c0a8:64/64"),),
                    ),
                ),
            ),
        ),
        namespace_prefix=f"cjbcost{run}-",
    )
    try:
        with RealKernel() as kernel:
            assert apply(kernel, spec) != []
            assert apply(kernel, spec) == []  # the read-back states were right
            for ns in (a, b):
                dumped = kernel.links(ns)
                for name, state in dumped.items():
                    one = kernel.link(ns, name)
                    assert one is not None, name
                    # A counter may move between two reads (vx0 has no route to its remote).
                    assert replace(one, tx_errors=0) == replace(state, tx_errors=0), name
                assert kernel.link(ns, "nonexistent0") is None
                every = kernel.all_addresses(ns)
                for name in dumped:
                    assert every.get(name, set()) == kernel.addresses(ns, name), name
            assert kernel.link(a, "v0") is not None
            assert kernel.link(a, "v0").master == "br0"  # type: ignore[union-attr]
    finally:
        remove_netns(a)
        remove_netns(b)
