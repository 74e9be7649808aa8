"""The reference server in-process over loopback: tenant pages, limits, access log.

Loopback has no tenant links, so the tenant comes from a PROXY v2 header here (the scope-id
path is covered by test_service_netns.py); a plain ::1 client must be refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from cjb.service import proxy_v2 as pp
from cjb.service import site
from cjb.service.aio import listen_socket, parse_hostport, sockaddr_for
from cjb.service.errors import AddressError
from cjb.service.http_server import ReferenceServer, ServerConfig
from cjb.service.tenancy import Tenancy
from cjb.service.watch import DirectoryWatcher, FileStamp

DOC = {
    "version": 1,
    "tenants": {
        "ta": {"tenant": "acme", "service_ipv4": "192.168.0.100", "native_ifname": "ta6"},
        "tb": {"tenant": "globex", "service_ipv4": "192.168.0.100"},
    },
}


def _tenancy() -> Tenancy:
    data = json.dumps(DOC).encode()
    watcher = DirectoryWatcher(
        "t.json", 0.0, stat=lambda p: FileStamp(1, len(data), 1), read=lambda p: data
    )
    return Tenancy(watcher, clock=lambda: 0.0, index_to_name=lambda i: "lo")


@pytest.fixture
def docroot(tmp_path: Path) -> Path:
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "index.html").write_text("<h1>acme's own page</h1>\n")
    (tmp_path / "acme" / "notes.txt").write_text("plain\n")
    (tmp_path / "secret.txt").write_text("outside every tenant\n")
    (tmp_path / "acme" / "escape.txt").symlink_to(tmp_path / "secret.txt")
    return tmp_path


def proxy_header(tenant: str | None, ifname: str = "ta") -> bytes:
    tlvs = pp.cjb_tlvs(tenant, ifname) if tenant else ()
    return pp.encode(pp.stream6("fe80::c0a8:a", 40000, "fe80::c0a8:64", 80, tlvs))


def get(path: str = "/", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n".encode()


def exchange(config: ServerConfig, *chunks: bytes, pause: float = 0.0) -> bytes:
    async def run() -> bytes:
        app = ReferenceServer(_tenancy(), config)
        sock = listen_socket("::1", 0)
        port = sock.getsockname()[1]
        server = await asyncio.start_server(app.handle, sock=sock)
        async with server:
            reader, writer = await asyncio.open_connection("::1", port)
            for chunk in chunks:
                writer.write(chunk)
                await writer.drain()
                await asyncio.sleep(pause)
            data = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return data

    return asyncio.run(run())


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def body_of(response: bytes) -> bytes:
    return response.split(b"\r\n\r\n", 1)[1]


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "cjb.service.access"]


def test_tenant_gets_its_own_docroot_and_log_names_it(
    docroot: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cjb.service.access")
    cfg = ServerConfig(docroot, proxy_protocol=True)
    out = exchange(cfg, proxy_header("acme") + get())
    assert status_of(out) == 200 and body_of(out) == b"<h1>acme's own page</h1>\n"
    assert b"content-type: text/html; charset=utf-8" in out
    [line] = access_lines(caplog)
    assert line["tenant"] == "acme" and line["ifname"] == "ta" and line["status"] == 200
    assert line["peer"] == "fe80::c0a8:a%ta" and line["via"] == "proxy"


def test_tenant_without_docroot_gets_generated_page(docroot: Path) -> None:
    out = exchange(ServerConfig(docroot, proxy_protocol=True), proxy_header("globex", "tb") + get())
    assert status_of(out) == 200
    body = body_of(out)
    assert b"tenant globex" in body and b"<b>tb</b>" in body and b"fe80::c0a8:a%tb" in body


def headers_of(response: bytes) -> dict[str, str]:
    head = response.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")[1:]
    return {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head)}


@pytest.mark.parametrize(
    ("ifname", "path"), [("ta", "translated"), ("ta6", "native"), ("tb", "unknown")]
)
def test_answer_names_tenant_interface_and_path(
    docroot: Path, ifname: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Also for a tenant's own pages, which say nothing of where they were fetched from;
    an interface the directory binds to another tenant is no path of this one."""
    caplog.set_level(logging.INFO, logger="cjb.service.access")
    out = exchange(ServerConfig(docroot, proxy_protocol=True), proxy_header("acme", ifname) + get())
    assert status_of(out) == 200 and body_of(out) == b"<h1>acme's own page</h1>\n"
    headers = headers_of(out)
    assert headers["x-cjb-tenant"] == "acme"
    assert headers["x-cjb-interface"] == ifname
    assert headers["x-cjb-path"] == path
    [line] = access_lines(caplog)
    assert line["path"] == (None if path == "unknown" else path)


def test_generated_page_names_the_native_path() -> None:
    page = site.default_page(site.Visitor("acme", "ta6", "fe80::1%ta6", "native"))
    assert b"<b>ta6</b> by the native IPv6 path" in page
    page = site.default_page(site.Visitor("acme", "ta", "fe80::c0a8:a%ta", "translated"))
    assert b"<b>ta</b> by the translated path" in page


def test_refusal_names_no_tenant_in_headers(docroot: Path) -> None:
    out = exchange(ServerConfig(docroot), get())
    assert status_of(out) == 403 and "x-cjb-tenant" not in headers_of(out)


def test_unknown_tenant_is_403_naming_the_interface(docroot: Path) -> None:
    out = exchange(
        ServerConfig(docroot, proxy_protocol=True), proxy_header("initech", "tz") + get()
    )
    assert status_of(out) == 403
    assert b"unknown tenant 'initech' (interface tz)" in body_of(out)


def test_plain_loopback_client_has_no_tenant(docroot: Path) -> None:
    out = exchange(ServerConfig(docroot), get())
    assert status_of(out) == 403 and body_of(out).startswith(b"unknown tenant")


def test_keep_alive_and_head(docroot: Path) -> None:
    head = b"HEAD /notes.txt HTTP/1.1\r\nHost: x\r\n\r\n"
    out = exchange(
        ServerConfig(docroot, proxy_protocol=True), proxy_header("acme") + head + get("/notes.txt")
    )
    first, second = out.split(b"HTTP/1.1 ")[1:]
    assert (
        first.startswith(b"200") and b"content-length: 6" in first and first.endswith(b"\r\n\r\n")
    )
    assert second.startswith(b"200") and second.endswith(b"\r\n\r\nplain\n")


@pytest.mark.parametrize(
    ("path", "status"),
    [("/../secret.txt", 400), ("/%2e%2e/secret.txt", 400), ("/escape.txt", 404), ("/nope", 404)],
)
def test_paths_stay_inside_the_tenant_root(docroot: Path, path: str, status: int) -> None:
    out = exchange(ServerConfig(docroot, proxy_protocol=True), proxy_header("acme") + get(path))
    assert status_of(out) == status and b"outside every tenant" not in out


def test_oversized_head_is_431(docroot: Path) -> None:
    big = "X-Filler: " + "a" * 20000 + "\r\n"
    out = exchange(ServerConfig(docroot, proxy_protocol=True), proxy_header("acme") + get("/", big))
    assert status_of(out) == 431 and b"larger than 16384 bytes" in body_of(out)


def test_get_with_body_is_413(docroot: Path) -> None:
    req = b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    out = exchange(ServerConfig(docroot, proxy_protocol=True), proxy_header("acme") + req)
    assert status_of(out) == 413 and b"must not carry a body" in body_of(out)


def test_post_is_405_and_garbage_is_400(docroot: Path) -> None:
    post = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    out = exchange(ServerConfig(docroot, proxy_protocol=True), proxy_header("acme") + post)
    assert status_of(out) == 405
    out = exchange(
        ServerConfig(docroot, proxy_protocol=True),
        proxy_header("acme") + b"\x01\x02 nonsense\r\n\r\n",
    )
    assert status_of(out) == 400 and body_of(out).startswith(b"malformed request")


def test_slow_client_gets_408(docroot: Path) -> None:
    cfg = ServerConfig(docroot, proxy_protocol=True, request_timeout=0.3)
    out = exchange(cfg, proxy_header("acme") + b"GET / HTTP/1.1\r\nHo", pause=1.0)
    assert status_of(out) == 408


def test_bad_proxy_header_closes_without_answer(
    docroot: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cjb.service")
    out = exchange(ServerConfig(docroot, proxy_protocol=True), get())
    assert out == b""
    assert any("bad signature" in r.getMessage() for r in caplog.records)


def test_site_default_page_escapes_html() -> None:
    page = site.default_page(site.Visitor("a<b", "t1", "fe80::1%t1"))
    assert b"a&lt;b" in page and b"a<b" not in page


def test_address_helpers() -> None:
    assert sockaddr_for("::", 80)[1] == ("::", 80, 0, 0)
    assert sockaddr_for("fe80::c0a8:64%1", 80)[1] == ("fe80::c0a8:64", 80, 0, 1)
    assert sockaddr_for("127.0.0.1", 80)[1] == ("127.0.0.1", 80)
    assert parse_hostport("[::1]:8080") == ("::1", 8080)
    assert parse_hostport("127.0.0.1:9") == ("127.0.0.1", 9)
    for bad in ("::1", "[::1]", "host", "[::1]:x"):
        with pytest.raises(AddressError):
            parse_hostport(bad)
    with pytest.raises(AddressError, match="no interface named"):
        sockaddr_for("fe80::1%nosuchif0", 80)
