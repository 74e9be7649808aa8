"""The netlink reconciler against the fake kernel: golden text, idempotence, ownership."""

from __future__ import annotations

import ipaddress

import pytest

from cjb.common.netlink import (
    Bridge,
    Existing,
    Link,
    Namespace,
    NetworkSpec,
    Route,
    SpecError,
    Veth,
    VethPeer,
    Vxlan,
    apply,
    remove,
)
from cjb.common.netlink.fake import FakeKernel


def _spec(sites: int) -> NetworkSpec:
    namespaces = [
        Namespace(
            "t-hub",
            owned=True,
            sysctls=(("net/ipv6/conf/all/forwarding", "1"),),
            links=tuple(
                Link(
                    f"ap{k}",
                    Veth(peer="wan0", peer_netns=f"t-site{k}"),
                    mtu=1600,
                    addresses=(ipaddress.ip_interface(f"fd00:{k}::1/64"),),
                )
                for k in range(1, sites + 1)
            ),
        )
    ]
    for k in range(1, sites + 1):
        namespaces.append(
            Namespace(
                f"t-site{k}",
                owned=True,
                links=(
                    Link(
                        "wan0",
                        VethPeer(of=f"ap{k}"),
                        mtu=1600,
                        addresses=(ipaddress.ip_interface(f"fd00:{k}::2/64"),),
                    ),
                    Link("br-lan", Bridge(), sysctls=(("ipv6.disable_ipv6", "1"),)),
                    Link(
                        "vx0",
                        Vxlan(
                            vni=k,
                            local=ipaddress.ip_address(f"fd00:{k}::2"),
                            remote=ipaddress.ip_address("fd00::2"),
                            underlay="wan0",
                        ),
                        master="br-lan",
                        offloads_off=True,
                    ),
                ),
                routes=(Route(ipaddress.ip_network("::/0"), ipaddress.ip_address(f"fd00:{k}::1")),),
            )
        )
    return NetworkSpec("test", tuple(namespaces), namespace_prefix="t-")


GOLDEN_TWO_SITES = """\
netns (current)
netns t-hub
  sysctl net/ipv6/conf/all/forwarding=1
  link ap1 kind=veth mtu=1600 master=- up alias=cjb:test
    addr fd00:1::1/64
  link ap2 kind=veth mtu=1600 master=- up alias=cjb:test
    addr fd00:2::1/64
netns t-site1
  sysctl net/ipv6/conf/br-lan/disable_ipv6=1
  link br-lan kind=bridge mtu=1500 master=- up alias=cjb:test
  link vx0 kind=vxlan mtu=1500 master=br-lan up alias=cjb:test vni=1 local=fd00:1::2 \
remote=fd00::2 port=4789 offloads=off
  link wan0 kind=veth mtu=1600 master=- up alias=cjb:test
    addr fd00:1::2/64
  route ::/0 via fd00:1::1 dev -
netns t-site2
  sysctl net/ipv6/conf/br-lan/disable_ipv6=1
  link br-lan kind=bridge mtu=1500 master=- up alias=cjb:test
  link vx0 kind=vxlan mtu=1500 master=br-lan up alias=cjb:test vni=2 local=fd00:2::2 \
remote=fd00::2 port=4789 offloads=off
  link wan0 kind=veth mtu=1600 master=- up alias=cjb:test
    addr fd00:2::2/64
  route ::/0 via fd00:2::1 dev -
"""


def test_apply_renders_golden_state() -> None:
    kernel = FakeKernel()
    assert apply(kernel, _spec(2))
    assert kernel.render() == GOLDEN_TWO_SITES


def test_second_apply_changes_nothing() -> None:
    kernel = FakeKernel()
    apply(kernel, _spec(2))
    calls = kernel.calls
    assert apply(kernel, _spec(2)) == []
    assert kernel.calls == calls


def test_removing_an_element_removes_what_it_owned() -> None:
    kernel = FakeKernel()
    apply(kernel, _spec(2))
    changes = apply(kernel, _spec(1))
    assert "(current): delete netns t-site2" in changes
    rendered = kernel.render()
    assert "t-site2" not in rendered
    assert "ap2" not in rendered  # the veth partner went with its namespace
    assert apply(kernel, _spec(1)) == []


def test_remove_leaves_nothing_owned() -> None:
    kernel = FakeKernel()
    apply(kernel, _spec(2))
    remove(kernel, _spec(2))
    assert kernel.render() == "netns (current)\n"


def test_drift_is_repaired() -> None:
    kernel = FakeKernel()
    apply(kernel, _spec(1))
    kernel.set_link("t-site1", "vx0", nomaster=True, up=False)
    changes = apply(kernel, _spec(1))
    assert changes == ["t-site1: set vx0 master br-lan", "t-site1: set vx0 up"]


def test_changed_vxlan_parameters_recreate_the_port() -> None:
    kernel = FakeKernel()
    apply(kernel, _spec(1))
    spec = _spec(1)
    site = spec.namespace("t-site1")
    vx = site.link("vx0")
    assert isinstance(vx.kind, Vxlan)
    moved = Link(
        "vx0",
        Vxlan(vni=99, local=vx.kind.local, remote=vx.kind.remote, underlay="wan0"),
        master="br-lan",
        offloads_off=True,
    )
    new_site = Namespace(
        site.name,
        tuple(moved if lk.name == "vx0" else lk for lk in site.links),
        routes=site.routes,
        owned=True,
    )
    new = NetworkSpec(
        "test",
        tuple(new_site if ns.name == "t-site1" else ns for ns in spec.namespaces),
        namespace_prefix="t-",
    )
    changes = apply(kernel, new)
    assert "t-site1: delete link vx0 (kind or parameters differ)" in changes
    assert "vni=99" in kernel.render()


def test_untagged_links_are_never_deleted_and_existing_links_are_adopted() -> None:
    kernel = FakeKernel()
    kernel.add_link(None, Link("eth9", Bridge()), tag="")
    kernel.set_link(None, "eth9", alias="")  # someone else's link
    spec = NetworkSpec(
        "agent",
        (Namespace(None, (Link("br0", Bridge()), Link("eth9", Existing(), master="br0"))),),
    )
    apply(kernel, spec)
    assert "link eth9 kind=bridge mtu=1500 master=br0 up" in kernel.render()
    apply(kernel, NetworkSpec("agent", (Namespace(None, ()),)))
    assert "eth9" in kernel.render()
    assert "br0" not in kernel.render()


def test_routes_none_means_not_managed() -> None:
    kernel = FakeKernel()
    route = Route(ipaddress.ip_network("::/0"), ipaddress.ip_address("fd00::1"))
    apply(kernel, NetworkSpec("lab", (Namespace(None, routes=(route,)),)))
    apply(kernel, NetworkSpec("agent", (Namespace(None),)))
    assert "route ::/0" in kernel.render()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            NetworkSpec("x", (Namespace(None, (Link("p", VethPeer(of="nope")),)),)),
            "no Veth 'nope'",
        ),
        (
            NetworkSpec("x", (Namespace(None, (Link("a", Bridge(), master="br9"),)),)),
            "master 'br9'",
        ),
        (NetworkSpec("x", (Namespace("other", owned=True),)), "namespace_prefix"),
    ],
)
def test_inconsistent_specs_are_refused_with_the_element_named(
    spec: NetworkSpec, message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        apply(FakeKernel(), spec)


def test_link_names_longer_than_ifnamsiz_are_refused() -> None:
    with pytest.raises(SpecError, match=r"1\.\.15 bytes"):
        Link("x" * 16, Bridge())
