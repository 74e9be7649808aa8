"""What the reference server answers, given who asked and what (no sockets, no asyncio).

Each tenant's pages live in ``DOCROOT/<tenant>/``; a tenant without that folder gets a
generated default page naming the tenant, its interface, the path it came by and the peer
(``addr%ifname``). Every answer to a known tenant also names them in headers (`identity_headers`),
so a client can tell which link answered even when the tenant has pages of its own.
Paths are confined to the tenant's folder (no ``..``, no symlink escape).
"""

from __future__ import annotations

import html
import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from cjb.service.directory import LinkKind

MAX_FILE_BYTES = 16 * 1024 * 1024

# How a request reached the service host: "translated" = a LAN client's IPv4, turned into
# IPv6 by the gateway and delivered on the tenant's service link; "native" = the LAN's own
# IPv6, delivered as is on the tenant's native link.
PathKind = Literal["translated", "native"]
PATH_OF_LINK: dict[LinkKind, PathKind] = {"service": "translated", "native": "native"}

HEADER_TENANT = "x-cjb-tenant"
HEADER_INTERFACE = "x-cjb-interface"
HEADER_PATH = "x-cjb-path"


@dataclass(frozen=True, slots=True)
class Visitor:
    """The tenant identity of a request, however it was learned (scope id or PROXY TLV)."""

    tenant: str
    ifname: str
    peer_text: str
    path: PathKind | None = None  # None: not known (an interface the directory does not list)


def identity_headers(visitor: Visitor) -> list[tuple[str, str]]:
    """Response headers naming who was served and where: tenant, interface, path."""
    return [
        (HEADER_TENANT, visitor.tenant),
        (HEADER_INTERFACE, visitor.ifname),
        (HEADER_PATH, visitor.path or "unknown"),
    ]


def _path_text(path: PathKind | None) -> str:
    if path == "translated":
        return "the translated path (IPv4 on the LAN, IPv6 here)"
    if path == "native":
        return "the native IPv6 path"
    return "an unknown path"


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    content_type: str
    body: bytes
    note: str = ""  # why, for the access log (never the body)


def text_reply(status: int, message: str, note: str = "") -> Reply:
    return Reply(status, "text/plain; charset=utf-8", (message + "\n").encode(), note or message)


def default_page(visitor: Visitor) -> bytes:
    t, i, p = (html.escape(v) for v in (visitor.tenant, visitor.ifname, visitor.peer_text))
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        f"<title>CJB tenant {t}</title></head>\n<body>\n"
        f"<h1>Hello, tenant {t}</h1>\n"
        f"<p>This is the CJB reference server. You reached it on interface <b>{i}</b>"
        f" by {_path_text(visitor.path)} from <code>{p}</code>.</p>\n"
        f"<p>Tenant {t} has no index.html of its own; this page is generated.</p>\n"
        "</body></html>\n"
    ).encode()


def _safe_relative(target: str) -> str | None:
    path = unquote(urlsplit(target).path)
    if not path.startswith("/") or "\x00" in path or "\\" in path:
        return None
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        return None
    rel = "/".join(parts)
    if path.endswith("/") or not rel:
        rel = f"{rel}/index.html" if rel else "index.html"
    return rel


def respond(docroot: Path, visitor: Visitor, target: str) -> Reply:
    """The reply to GET `target` (HEAD uses the same reply without the body). Blocking I/O:
    adapters call it off the event loop."""
    rel = _safe_relative(target)
    if rel is None:
        return text_reply(400, "bad request path")
    root = docroot / visitor.tenant
    if rel == "index.html" and not (root / rel).is_file():
        # A tenant without its own front page still gets one that names it.
        return Reply(200, "text/html; charset=utf-8", default_page(visitor), "default page")
    if not root.is_dir():
        return text_reply(404, "not found", "no docroot for tenant")
    try:
        real_root = root.resolve(strict=True)
        candidate = (root / rel).resolve(strict=True)
    except (OSError, RuntimeError):
        return text_reply(404, "not found")
    if not candidate.is_relative_to(real_root) or not candidate.is_file():
        return text_reply(404, "not found")
    try:
        if candidate.stat().st_size > MAX_FILE_BYTES:
            return text_reply(500, "file too large for the reference server")
        with open(candidate, "rb") as f:
            body = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return text_reply(
            500, "cannot read file", f"cannot read file: {os.strerror(exc.errno or 0)}"
        )
    ctype = mimetypes.guess_type(candidate.name)[0] or "application/octet-stream"
    if ctype.startswith("text/"):
        ctype += "; charset=utf-8"
    return Reply(200, ctype, body)
