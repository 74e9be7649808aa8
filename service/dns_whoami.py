"""A multi-tenant DNS responder on one UDP socket: the framework's UDP example.

Every tenant asks the same server at the same address (``192.168.0.100:53`` on its LAN) and
gets its own answers, because the framework names the tenant of each datagram:

- ``whoami.cjb. TXT`` -> ``"tenant=<tenant>" "client=<LAN IPv4>"``
- ``service.cjb. A``  -> the tenant's service address from the tenant directory
- another name under ``cjb.`` -> NXDOMAIN; any other name -> REFUSED (not a resolver).

The DNS part is sans-IO (`answer`), after RFC 1035 §4.1: one question, no compression in
it, at most 255 bytes of name. Anything else that is not a well-formed query gets no reply
(a malformed datagram is dropped and counted, never an exception).
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass
from ipaddress import IPv4Address

from cjb.service.framework import Client, serve_udp
from cjb.service.tenancy import Tenancy

ZONE = ("cjb",)
TTL = 60
TYPE_A, TYPE_TXT, CLASS_IN = 1, 16, 1
RCODE_NXDOMAIN, RCODE_REFUSED, RCODE_NOTIMP = 3, 5, 4
_HEADER = struct.Struct("!HHHHHH")
MAX_NAME = 255


@dataclass(frozen=True, slots=True)
class Question:
    labels: tuple[str, ...]  # lower-cased
    qtype: int
    qclass: int
    raw: bytes  # the question section as sent (echoed in the reply)


def parse_query(data: bytes) -> tuple[int, int, Question] | str:
    """(id, flags, question) of a standard query, or the reason it is not one."""
    if len(data) < _HEADER.size:
        return "shorter than a DNS header"
    ident, flags, qdcount, _an, _ns, _ar = _HEADER.unpack_from(data)
    if flags & 0x8000:
        return "a response, not a query"
    if qdcount != 1:
        return f"{qdcount} questions (expected 1)"
    offset, labels = _HEADER.size, []
    while True:
        if offset >= len(data):
            return "question name runs past the end"
        length = data[offset]
        offset += 1
        if length == 0:
            break
        if length & 0xC0:
            return "compressed or extended label in the question"
        label = data[offset : offset + length]
        if len(label) != length:
            return "question name runs past the end"
        labels.append(label.decode("ascii", "replace").lower())
        offset += length
        if offset - _HEADER.size > MAX_NAME:
            return "question name longer than 255 bytes"
    if len(data) < offset + 4:
        return "question without type and class"
    qtype, qclass = struct.unpack_from("!HH", data, offset)
    raw = data[_HEADER.size : offset + 4]
    return ident, flags, Question(tuple(labels), qtype, qclass, raw)


def _rr(rtype: int, rdata: bytes) -> bytes:
    # 0xC00C: a pointer to the question's name at offset 12 (RFC 1035 §4.1.4).
    return struct.pack("!HHHIH", 0xC00C, rtype, CLASS_IN, TTL, len(rdata)) + rdata


def _txt(*strings: str) -> bytes:
    out = b""
    for s in strings:
        b = s.encode()[:255]
        out += bytes([len(b)]) + b
    return out


def answer(
    query: bytes, tenant: str, client_ipv4: IPv4Address | None, service: IPv4Address
) -> bytes | str:
    """The reply to `query` from `tenant`'s client, or why there is none."""
    parsed = parse_query(query)
    if isinstance(parsed, str):
        return parsed
    ident, flags, q = parsed
    opcode = (flags >> 11) & 0xF
    records: list[bytes] = []
    rcode = 0
    if opcode != 0:
        rcode = RCODE_NOTIMP
    elif q.labels[-len(ZONE) :] != ZONE or len(q.labels) <= len(ZONE):
        rcode = RCODE_REFUSED
    elif q.qclass == CLASS_IN and q.labels == ("whoami", *ZONE):
        if q.qtype == TYPE_TXT:
            records.append(_rr(TYPE_TXT, _txt(f"tenant={tenant}", f"client={client_ipv4}")))
    elif q.qclass == CLASS_IN and q.labels == ("service", *ZONE):
        if q.qtype == TYPE_A:
            records.append(_rr(TYPE_A, service.packed))
    else:
        rcode = RCODE_NXDOMAIN
    # QR=1, the opcode and RD echoed, AA=1 (we are the zone's authority), RA=0.
    out_flags = 0x8000 | (flags & 0x7900) | 0x0400 | rcode
    head = _HEADER.pack(ident, out_flags, 1, len(records), 0, 0)
    return head + q.raw + b"".join(records)


class WhoamiDns:
    """The handler: holds the tenancy (for service addresses) and drop counters."""

    def __init__(self, tenancy: Tenancy) -> None:
        self.tenancy = tenancy
        self.drops: Counter[str] = Counter()
        self.answered = 0

    def __call__(self, client: Client, data: bytes) -> bytes | None:
        entry = self.tenancy.directory.by_tenant(client.tenant)
        if entry is None:
            self.drops["tenant left the directory"] += 1
            return None
        reply = answer(data, client.tenant, client.ipv4, entry.service_ipv4)
        if isinstance(reply, str):
            self.drops[reply] += 1
            return None
        self.answered += 1
        return reply


async def serve_dns(tenancy: Tenancy, host: str = "::", port: int = 53) -> None:
    """Run the responder until cancelled."""
    await serve_udp(WhoamiDns(tenancy), port, tenancy=tenancy, host=host, app="dns")
