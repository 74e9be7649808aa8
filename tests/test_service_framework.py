"""The application side without root: tenant-unique addresses, the framework's tenant
handling (fake interface lookups), UDP replies on loopback, the DNS example's codec, and the
nginx/Apache/HAProxy snippets. The real servers run in tests/test_service_apps_lab.py."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import struct
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from cjb.cli.main import main as cli
from cjb.common.tenant_directory import TENANT_PATTERN
from cjb.service import datagram, tenant_address
from cjb.service.directory import parse_directory
from cjb.service.dns_whoami import WhoamiDns, answer, parse_query
from cjb.service.errors import AddressError, DirectoryError
from cjb.service.framework import Client, _TcpService, _UdpCore, serve_udp
from cjb.service.server_configs import ConfigError, SnippetOptions, parse_upstreams, snippet
from cjb.service.tenancy import Tenancy
from cjb.service.tenant_address import (
    TenantPrefixes,
    client_address,
    ipv4_prefix,
    tenant_prefix,
    unique_address,
)

DOC = {
    "version": 1,
    "tenants": {
        "ta": {"tenant": "acme", "service_ipv4": "192.168.0.100", "native_ifname": "ta6"},
        "tb": {"tenant": "globex", "service_ipv4": "10.1.2.3"},
    },
}
LINKS = {7: "ta", 8: "tb", 9: "ta6"}


def _tenancy(tmp_path: Path, doc: dict[str, object] = DOC) -> Tenancy:
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps(doc))
    return Tenancy.open(str(path), index_to_name=_link_name)


def _link_name(index: int) -> str:
    if index not in LINKS:
        raise OSError(6, "No such device or address")
    return LINKS[index]


# --- tenant-unique addresses -------------------------------------------------------------


def test_documented_derivation_is_pinned() -> None:
    # docs/applications.md and the generated server configs name these: a change of the
    # derivation would silently re-home every tenant in every deployed config.
    assert str(tenant_prefix("tenant1")) == "fdd2:eb84:2a81:40a9::/64"
    assert str(client_address("tenant1", "192.168.0.10")) == "fdd2:eb84:2a81:40a9::c0a8:a"
    assert str(ipv4_prefix("tenant1")) == "fdd2:eb84:2a81:40a9::/96"


def test_same_client_in_two_tenants_gets_two_addresses_and_both_reverse() -> None:
    a = unique_address("acme", "fe80::c0a8:a")
    b = unique_address("globex", "fe80::c0a8:a%tb")
    assert a != b
    assert a in ipaddress.ip_network("fd00::/8") and b in ipaddress.ip_network("fd00::/8")
    prefixes = TenantPrefixes.build(["acme", "globex"])
    for addr, tenant in ((a, "acme"), (b, "globex")):
        found = prefixes.lookup(addr)
        assert found is not None
        assert (found.tenant, str(found.link_local), str(found.ipv4)) == (
            tenant,
            "fe80::c0a8:a",
            "192.168.0.10",
        )


def test_native_client_keeps_its_interface_id_and_has_no_ipv4() -> None:
    addr = unique_address("acme", "fe80::1c2d:3eff:fe4f:5a6b")
    assert addr in tenant_prefix("acme") and addr not in ipv4_prefix("acme")
    found = TenantPrefixes.build(["acme"]).lookup(addr)
    assert found is not None and found.ipv4 is None
    assert str(found.link_local) == "fe80::1c2d:3eff:fe4f:5a6b"


@pytest.mark.parametrize("text", ["fd00::1", "192.168.0.10", "not an address", "", "fe80::1"])
def test_lookup_of_anything_else_is_none(text: str) -> None:
    assert TenantPrefixes.build(["acme"]).lookup(text) is None


@pytest.mark.parametrize("peer", ["2001:db8::1", "fe80:0:0:1::1", "192.168.0.10"])
def test_only_link_local_peers_have_unique_addresses(peer: str) -> None:
    with pytest.raises(ValueError, match="not an fe80::/64 link-local"):
        unique_address("acme", peer)


@given(
    st.lists(st.from_regex(TENANT_PATTERN, fullmatch=True), min_size=1, max_size=8, unique=True),
    st.integers(0, 2**32 - 1),
)
def test_round_trip_for_any_tenants_and_ipv4(tenants: list[str], ip: int) -> None:
    prefixes = TenantPrefixes.build(tenants)
    ipv4 = ipaddress.IPv4Address(ip)
    for tenant in tenants:
        found = prefixes.lookup(client_address(tenant, ipv4))
        assert found is not None and (found.tenant, found.ipv4) == (tenant, ipv4)


def test_two_tenants_on_one_prefix_are_refused_with_both_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        tenant_address, "tenant_prefix", lambda _t: ipaddress.IPv6Network("fd00::/64")
    )
    with pytest.raises(ValueError, match="'acme' and 'globex'"):
        TenantPrefixes.build(["acme", "globex"])
    with pytest.raises(DirectoryError, match=r"t\.json: tenants: .*same prefix"):
        parse_directory(json.dumps(DOC).encode(), "t.json")


def test_tenancy_reverses_and_follows_directory_changes(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps(DOC))
    tenancy = Tenancy.open(str(path), clock=lambda: now[0], index_to_name=_link_name)
    globex = client_address("globex", "192.168.0.10")
    found = tenancy.unique_client(globex)
    assert found is not None and found.tenant == "globex"
    doc = json.loads(json.dumps(DOC))
    del doc["tenants"]["tb"]
    path.write_text(json.dumps(doc) + " ")
    now[0] += 10
    tenancy.poll()
    assert tenancy.unique_client(globex) is None  # the tenant left: no longer reversed
    assert tenancy.unique_client(client_address("acme", "192.168.0.10")) is not None


# --- the framework's tenant handling -------------------------------------------------------


class _Writer:
    def __init__(self, peer: object) -> None:
        self.peer = peer
        self.closed = False

    def get_extra_info(self, name: str) -> object:
        return self.peer if name == "peername" else None

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True


def test_tcp_known_peer_reaches_the_handler_with_its_client(tmp_path: Path) -> None:
    seen: list[Client] = []

    async def handler(client: Client, _r: object, _w: object) -> None:
        seen.append(client)

    service = _TcpService(handler, _tenancy(tmp_path), "t", 10)  # type: ignore[arg-type]
    writer = _Writer(("fe80::c0a8:a%tb", 40000, 0, 8))
    asyncio.run(service.handle(None, writer))  # type: ignore[arg-type]
    assert writer.closed
    (client,) = seen
    assert (client.tenant, client.ifname, client.link, str(client.ipv4)) == (
        "globex",
        "tb",
        "service",
        "192.168.0.10",
    )
    assert client.text == "fe80::c0a8:a%tb"
    assert client.unique_address == client_address("globex", "192.168.0.10")


@pytest.mark.parametrize(
    "peer",
    [("::1", 40000, 0, 0), ("fe80::c0a8:a", 40000, 0, 42), ("10.0.0.1", 40000), None],
)
def test_tcp_unknown_peer_never_reaches_the_handler(tmp_path: Path, peer: object) -> None:
    called = []

    async def handler(*args: object) -> None:
        called.append(args)

    service = _TcpService(handler, _tenancy(tmp_path), "t", 10)
    writer = _Writer(peer)
    asyncio.run(service.handle(None, writer))  # type: ignore[arg-type]
    assert called == [] and writer.closed


def test_tcp_handler_failure_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(*_args: object) -> None:
        raise KeyError("boom")

    service = _TcpService(handler, _tenancy(tmp_path), "t", 10)
    with caplog.at_level("WARNING", logger="cjb.service"):
        asyncio.run(service.handle(None, _Writer(("fe80::c0a8:a", 1, 0, 7))))  # type: ignore[arg-type]
    assert '"event":"handler_failed"' in caplog.text and "KeyError" in caplog.text


def test_udp_core_resolves_and_drops_truncated_or_unknown(tmp_path: Path) -> None:
    core = _UdpCore(_tenancy(tmp_path), "t")
    ok = datagram.Datagram(b"x", ("fe80::c0a8:a", 5, 0, 9), None, 9, False)
    client = core.client(ok)
    assert client is not None and (client.tenant, client.link) == ("acme", "native")
    assert core.client(datagram.Datagram(b"x", ok.peer, None, 9, True)) is None
    assert core.client(datagram.Datagram(b"x", ("fe80::1", 5, 0, 0), None, 0, False)) is None


# --- UDP on loopback: replies from the asked address; unknown peers get nothing -----------


def test_udp_reply_goes_back_from_the_address_asked() -> None:
    with (
        datagram.udp_socket("::1", 0) as server,
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as c,
    ):
        c.settimeout(2)
        c.sendto(b"question", server.getsockname())
        deadline = time.monotonic() + 2
        while True:
            try:
                request = datagram.receive(server)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        assert request.data == b"question" and not request.truncated
        assert request.local == ipaddress.IPv6Address("::1").packed and request.ifindex > 0
        datagram.reply(server, request, b"answer")
        data, source = c.recvfrom(100)
        assert (data, source[:2]) == (b"answer", server.getsockname()[:2])


def test_udp_socket_refuses_ipv4() -> None:
    with pytest.raises(AddressError, match="tenant services listen on IPv6"):
        datagram.udp_socket("127.0.0.1", 0)


def test_serve_udp_gives_a_non_tenant_peer_no_reply(tmp_path: Path) -> None:
    calls: list[bytes] = []

    async def main() -> bytes | None:
        ready = asyncio.Event()
        port = _free_udp_port()
        task = asyncio.create_task(
            serve_udp(lambda _c, d: calls.append(d) or d, port, tenancy=_tenancy(tmp_path),
                      host="::1", on_ready=ready.set)
        )  # fmt: skip
        await ready.wait()
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as c:
            c.setblocking(False)
            c.sendto(b"hello", ("::1", port))
            await asyncio.sleep(0.3)
            try:
                return c.recv(100)
            except BlockingIOError:
                return None
            finally:
                task.cancel()

    assert asyncio.run(main()) is None
    assert calls == []


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", 0))
        port: int = s.getsockname()[1]
        return port


# --- the DNS example's codec ------------------------------------------------------------


def _query(name: str, qtype: int, *, flags: int = 0x0100, qd: int = 1) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p)
    return (
        struct.pack("!HHHHHH", 0x1234, flags, qd, 0, 0, 0)
        + labels
        + b"\0"
        + struct.pack("!HH", qtype, 1)
    )


def _header(reply: bytes | str) -> tuple[int, int, int]:
    assert isinstance(reply, bytes)
    ident, flags, _qd, an, _ns, _ar = struct.unpack_from("!HHHHHH", reply)
    return ident, flags & 0xF, an


SERVICE = ipaddress.IPv4Address("192.168.0.100")
CLIENT = ipaddress.IPv4Address("192.168.0.10")


def test_dns_answers_name_the_tenant_and_its_service_address() -> None:
    whoami = answer(_query("whoami.cjb", 16), "acme", CLIENT, SERVICE)
    assert _header(whoami) == (0x1234, 0, 1)
    assert isinstance(whoami, bytes) and whoami.endswith(b"\x0btenant=acme\x13client=192.168.0.10")
    a = answer(_query("Service.CJB.", 1), "acme", CLIENT, SERVICE)
    assert _header(a) == (0x1234, 0, 1) and isinstance(a, bytes) and a.endswith(SERVICE.packed)
    assert _header(answer(_query("nothing.cjb", 1), "acme", CLIENT, SERVICE)) == (0x1234, 3, 0)
    assert _header(answer(_query("example.com", 1), "acme", CLIENT, SERVICE)) == (0x1234, 5, 0)
    assert _header(answer(_query("cjb", 1), "acme", CLIENT, SERVICE)) == (0x1234, 5, 0)
    assert _header(answer(_query("whoami.cjb", 1), "acme", CLIENT, SERVICE)) == (0x1234, 0, 0)
    notimp = answer(_query("whoami.cjb", 16, flags=0x2800), "acme", CLIENT, SERVICE)
    assert _header(notimp) == (0x1234, 4, 0)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        (b"\x00" * 5, "shorter than a DNS header"),
        (_query("whoami.cjb", 16, flags=0x8000), "a response"),
        (_query("whoami.cjb", 16, qd=2), "2 questions"),
        (_query("whoami.cjb", 16)[:-4], "without type and class"),
        (_query("whoami.cjb", 16)[:15], "runs past the end"),
        (struct.pack("!6H", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c\0\1\0\1", "compressed"),
        (struct.pack("!6H", 1, 0, 1, 0, 0, 0) + (b"\x3f" + b"a" * 63) * 5, "longer than 255"),
    ],
)
def test_malformed_dns_queries_get_no_reply_and_are_counted(
    tmp_path: Path, query: bytes, reason: str
) -> None:
    assert reason in str(parse_query(query))
    handler = WhoamiDns(_tenancy(tmp_path))
    client = Client("acme", "ta", "service", ipaddress.IPv6Address("fe80::c0a8:a"), 5, 7)
    assert handler(client, query) is None
    assert sum(handler.drops.values()) == 1 and handler.answered == 0


@given(st.binary(max_size=600))
def test_dns_codec_never_raises(data: bytes) -> None:
    answer(data, "acme", None, SERVICE)


# --- configuration snippets ---------------------------------------------------------------


DIRECTORY = parse_directory(json.dumps(DOC).encode(), "t.json")


@pytest.mark.parametrize("server", ["nginx", "apache", "haproxy"])
def test_every_snippet_names_each_tenant_by_its_prefix(server: str) -> None:
    options = SnippetOptions("t.json", default_upstream="[::1]:9000")
    text = snippet(server, DIRECTORY, options)
    for tenant in ("acme", "globex"):
        assert f"{tenant_prefix(tenant)}" in text and tenant in text
    assert "t.json" in text
    assert "[::1]:8080" in text  # the default listener is loopback only


def test_snippet_refusals_say_what_is_wrong() -> None:
    with pytest.raises(ConfigError, match="--docroot 'www; evil'"):
        snippet("nginx", DIRECTORY, SnippetOptions("t.json", docroot="www; evil"))
    with pytest.raises(ConfigError, match="--docroot"):
        snippet("apache", DIRECTORY, SnippetOptions("t.json", docroot="/srv/../etc"))
    with pytest.raises(ConfigError, match="loopback address, not a scoped one"):
        snippet("nginx", DIRECTORY, SnippetOptions("t.json", listen="[fe80::1%lo]:80"))
    with pytest.raises(AddressError, match="not an IP address"):
        snippet("nginx", DIRECTORY, SnippetOptions("t.json", listen="localhost:80"))
    with pytest.raises(ConfigError, match="tenant acme has no upstream"):
        snippet("haproxy", DIRECTORY, SnippetOptions("t.json", upstreams={"globex": "[::1]:1"}))
    with pytest.raises(ConfigError, match=r"no tenant nobody in t\.json"):
        snippet("haproxy", DIRECTORY, SnippetOptions("t.json", upstreams={"nobody": "[::1]:1"}))
    with pytest.raises(ConfigError, match="a default upstream was given already"):
        parse_upstreams(["[::1]:1", "[::1]:2"])
    assert parse_upstreams(["acme=[::1]:1", "[::1]:2"]) == ({"acme": "[::1]:1"}, "[::1]:2")


def test_cli_config_prints_the_snippet_and_names_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps(DOC))
    runner = CliRunner()
    ok = runner.invoke(cli, ["service", "config", "nginx", "--directory", str(path)])
    assert ok.exit_code == 0, ok.output
    assert f"{tenant_prefix('globex')} globex;" in ok.output
    assert "listen [::1]:8080 proxy_protocol;" in ok.output
    path.write_text('{"version": 1, "tenants": {"bad name": {}}}')
    bad = runner.invoke(cli, ["service", "config", "apache", "--directory", str(path)])
    assert bad.exit_code == 1 and str(path) in bad.output
