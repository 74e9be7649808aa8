"""Tenant directory file: parsing, validation messages, and the mtime-poll watcher."""

from __future__ import annotations

import json
from ipaddress import IPv4Address

import pytest

from cjb.service.directory import dump_directory, parse_directory
from cjb.service.errors import DirectoryError
from cjb.service.watch import DirectoryWatcher, FileStamp, Reloaded, ReloadFailed, Unchanged

GOOD = {
    "version": 1,
    "tenants": {
        "t1": {"tenant": "acme", "service_ipv4": "192.168.0.100", "native_ifname": "t1n"},
        "t2": {"tenant": "globex", "service_ipv4": "192.168.1.100", "native_ifname": None},
    },
}


def _bytes(doc: object) -> bytes:
    return json.dumps(doc).encode()


def test_good_file_gives_frozen_entries_and_both_links() -> None:
    d = parse_directory(_bytes(GOOD), "/run/t.json")
    assert [e.ifname for e in d.entries] == ["t1", "t2"]
    b = d.binding("t1")
    assert b is not None and b.link == "service" and b.entry.tenant == "acme"
    assert b.entry.service_ipv4 == IPv4Address("192.168.0.100")
    native = d.binding("t1n")
    assert native is not None and native.link == "native" and native.entry.tenant == "acme"
    assert d.binding("eth0") is None
    assert d.by_tenant("globex") is not None and d.by_tenant("nobody") is None
    with pytest.raises(AttributeError):
        d.entries[0].tenant = "x"  # type: ignore[misc]


def test_dump_round_trips() -> None:
    d = parse_directory(_bytes(GOOD), "f")
    assert parse_directory(dump_directory(d), "f") == d


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["tenants"]["t1"].update(service_ipv4="300.1.1.1"), "tenants.t1.service_ipv4"),
        (lambda d: d["tenants"]["t1"].update(tenant="../etc"), "tenants.t1.tenant"),
        (lambda d: d["tenants"]["t2"].pop("tenant"), "tenants.t2.tenant"),
        (lambda d: d["tenants"]["t1"].update(colour="red"), "tenants.t1.colour"),
        (lambda d: d["tenants"].update({"a/b": d["tenants"].pop("t2")}), "tenants.a/b"),
        (lambda d: d["tenants"].update({"x" * 16: d["tenants"].pop("t2")}), "tenants." + "x" * 16),
        (lambda d: d.update(version=7), "version: unsupported directory version 7"),
        (lambda d: d.pop("version"), "version: Field required"),
        (lambda d: d["tenants"]["t2"].update(tenant="acme"), "tenant 'acme' is listed twice"),
        (lambda d: d["tenants"]["t2"].update(native_ifname="t1"), "interface 't1' is bound"),
    ],
)
def test_bad_file_message_names_file_and_field(mutate: object, expected: str) -> None:
    doc = json.loads(json.dumps(GOOD))
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(DirectoryError) as info:
        parse_directory(_bytes(doc), "/run/cjb/tenants.json")
    message = str(info.value)
    assert message.startswith("/run/cjb/tenants.json: ")
    assert expected in message


def test_not_json_names_line_and_column() -> None:
    with pytest.raises(DirectoryError, match=r"^f\.json: not valid JSON: .* line 2 column"):
        parse_directory(b'{"version": 1,\n "tenants": }', "f.json")


class FakeFs:
    def __init__(self) -> None:
        self.content: bytes | None = None
        self.stamp = 0

    def write(self, doc: object) -> None:
        self.content = doc if isinstance(doc, bytes) else _bytes(doc)
        self.stamp += 1

    def stat(self, path: str) -> FileStamp | None:
        return None if self.content is None else FileStamp(self.stamp, len(self.content), 1)

    def read(self, path: str) -> bytes:
        assert self.content is not None
        return self.content


def test_watcher_polls_on_its_deadline_and_keeps_last_good() -> None:
    fs = FakeFs()
    fs.write(GOOD)
    w = DirectoryWatcher("t.json", now=100.0, interval=2.0, stat=fs.stat, read=fs.read)
    first = w.load(100.0)
    assert w.next_deadline() == 102.0
    assert isinstance(w.poll(101.0), Unchanged)  # before the deadline nothing is looked at

    changed = json.loads(json.dumps(GOOD))
    changed["tenants"]["t3"] = {"tenant": "initech", "service_ipv4": "10.0.0.1"}
    fs.write(changed)
    assert isinstance(w.poll(101.5), Unchanged)
    out = w.poll(102.0)
    assert isinstance(out, Reloaded) and out.directory.by_tenant("initech") is not None
    assert isinstance(w.poll(104.0), Unchanged)  # same stamp: no re-read

    fs.write(b"{ half written")
    bad = w.poll(106.0)
    assert isinstance(bad, ReloadFailed) and "t.json: not valid JSON" in bad.message
    assert w.directory == out.directory != first
    assert w.last_error == bad.message

    fs.content = None
    gone = w.poll(108.0)
    assert isinstance(gone, ReloadFailed) and "disappeared" in gone.message
    assert w.directory == out.directory


def test_watcher_first_load_raises_on_missing_file() -> None:
    fs = FakeFs()
    w = DirectoryWatcher("missing.json", now=0.0, stat=fs.stat, read=fs.read)
    with pytest.raises(DirectoryError, match=r"missing\.json"):
        w.load(0.0)


def test_watcher_sees_a_real_file_replaced(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "t.json"
    path.write_bytes(_bytes(GOOD))
    w = DirectoryWatcher(str(path), now=0.0, interval=1.0)
    w.load(0.0)
    doc = json.loads(json.dumps(GOOD))
    del doc["tenants"]["t2"]
    tmp = tmp_path / "t.json.new"
    tmp.write_bytes(_bytes(doc))
    tmp.replace(path)  # the gateway's atomic rename: new inode
    out = w.poll(1.0)
    assert isinstance(out, Reloaded) and out.directory.by_tenant("globex") is None
