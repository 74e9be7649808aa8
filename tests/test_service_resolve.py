"""Peer sockaddr -> interface -> tenant, with fake interface lookups and a fake clock."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cjb.service.directory import parse_directory
from cjb.service.resolve import InterfaceNames, Known, Unknown, UnknownReason, resolve_peer
from cjb.service.tenancy import Tenancy
from cjb.service.watch import DirectoryWatcher, FileStamp

DOC = {
    "version": 1,
    "tenants": {
        "ta": {"tenant": "acme", "service_ipv4": "192.168.0.100", "native_ifname": "ta6"},
        "tb": {"tenant": "globex", "service_ipv4": "192.168.0.100"},
    },
}
DIRECTORY = parse_directory(json.dumps(DOC).encode(), "t.json")


class FakeLinks:
    def __init__(self, links: dict[int, str]) -> None:
        self.links = dict(links)
        self.lookups = 0

    def __call__(self, index: int) -> str:
        self.lookups += 1
        if index not in self.links:
            raise OSError(6, "No such device or address")
        return self.links[index]


def test_same_address_different_scope_gives_different_tenants() -> None:
    names = InterfaceNames(FakeLinks({7: "ta", 8: "tb", 9: "ta6"}))
    a = resolve_peer(("fe80::c0a8:a%ta", 40000, 0, 7), DIRECTORY, names, 0.0)
    b = resolve_peer(("fe80::c0a8:a", 40001, 0, 8), DIRECTORY, names, 0.0)
    n = resolve_peer(("fe80::1234", 40002, 0, 9), DIRECTORY, names, 0.0)
    assert a == Known("acme", "ta", 7, "service", "fe80::c0a8:a", 40000)
    assert a.peer_text == "fe80::c0a8:a%ta"
    assert isinstance(b, Known) and b.tenant == "globex"
    assert isinstance(n, Known) and n.tenant == "acme" and n.link == "native"


@pytest.mark.parametrize(
    ("sockaddr", "reason", "in_message"),
    [
        (("192.168.0.10", 80), UnknownReason.BAD_ADDRESS, "unknown tenant"),
        (None, UnknownReason.BAD_ADDRESS, "not an IPv6 sockaddr"),
        (("fe80::c0a8:a", "80", 0, 7), UnknownReason.BAD_ADDRESS, "unknown tenant"),
        (("::1", 5555, 0, 0), UnknownReason.NO_SCOPE, "no scope id"),
        (("fe80::c0a8:a", 5555, 0, 99), UnknownReason.INTERFACE_GONE, "interface index 99"),
        (("fe80::c0a8:a", 5555, 0, 3), UnknownReason.NOT_IN_DIRECTORY, "on interface eth0"),
    ],
)
def test_unknown_peers_are_results_with_a_clear_message(
    sockaddr: object, reason: UnknownReason, in_message: str
) -> None:
    names = InterfaceNames(FakeLinks({3: "eth0", 7: "ta"}))
    result = resolve_peer(sockaddr, DIRECTORY, names, 0.0)
    assert isinstance(result, Unknown) and result.reason is reason
    assert result.message.startswith("unknown tenant")
    assert in_message in result.message


@given(
    st.one_of(
        st.none(),
        st.integers(),
        st.text(),
        st.tuples(st.text(), st.integers()),
        st.tuples(st.text(), st.integers(), st.integers(), st.integers()),
        st.lists(st.integers()),
    )
)
def test_resolve_never_raises(sockaddr: object) -> None:
    names = InterfaceNames(FakeLinks({1: "ta"}))
    assert isinstance(resolve_peer(sockaddr, DIRECTORY, names, 0.0), Known | Unknown)


def test_name_cache_expires_and_drops_vanished_indexes() -> None:
    links = FakeLinks({7: "ta"})
    names = InterfaceNames(links, max_age=5.0)
    assert names.name(7, 0.0) == "ta"
    assert names.name(7, 4.9) == "ta"
    assert links.lookups == 1  # cached
    links.links[7] = "tb"  # renamed
    assert names.name(7, 4.99) == "ta"
    assert names.name(7, 5.0) == "tb"  # expired: looked up again
    del links.links[7]
    assert names.name(7, 10.0) is None  # vanished: entry dropped
    links.links[7] = "ta"
    assert names.name(7, 10.1) == "ta"  # not a cached negative
    assert links.lookups == 4


def test_tenancy_facade_reloads_and_clears_the_name_cache() -> None:
    state = {"doc": json.dumps(DOC).encode(), "stamp": 1}
    now = [0.0]

    def stat(path: str) -> FileStamp:
        return FileStamp(int(state["stamp"]), 0, 1)  # type: ignore[call-overload]

    def read(path: str) -> bytes:
        return state["doc"]  # type: ignore[return-value]

    links = FakeLinks({7: "ta"})
    watcher = DirectoryWatcher("t.json", 0.0, interval=1.0, stat=stat, read=read)
    tenancy = Tenancy(watcher, clock=lambda: now[0], index_to_name=links, name_max_age=60.0)
    peer = ("fe80::c0a8:a", 1, 0, 7)
    assert isinstance(tenancy.resolve(peer), Known)
    doc = json.loads(json.dumps(DOC))
    doc["tenants"]["tc"] = doc["tenants"].pop("ta")
    state["doc"], state["stamp"] = json.dumps(doc).encode(), 2
    links.links[7] = "tc"  # the gateway re-created the link under another name
    now[0] = 1.0
    assert tenancy.seconds_until_poll() == 0.0
    tenancy.poll()
    result = tenancy.resolve(peer)
    assert isinstance(result, Known) and result.ifname == "tc" and result.tenant == "acme"
