"""mDNS (RFC 6762) address rewriting between the LAN's IPv4 and the service link's fe80::/96.

To the service host (LAN -> service):
  - A records with a translatable IPv4 address become AAAA fe80::<ipv4>: the service host
    has no IPv4, and fe80::<ipv4> on the tenant's link *is* that LAN host (docs/architecture.md).
  - AAAA records with a link-local address outside fe80::/96 are removed: that address is
    on the LAN's link, not on the service link, so on the other side it names nobody.
  - A questions become AAAA questions: the service host answers with its fe80::/96 address,
    which comes back to the LAN as the A record the asker wanted.
  - NSEC type bitmaps (RFC 6762 §6.1 negative answers) say AAAA where they said A.
To the LAN (service -> LAN), the mirror image:
  - AAAA fe80::/96 records become A records; other link-local AAAA records are removed.
  - AAAA questions become A questions: a service-host browser asks AAAA (it is IPv6-only),
    but LAN hosts that only have IPv4 answer only A questions (RFC 6762 §6.2 has them send
    NSEC for AAAA). Asked as A, they answer, and the A answer becomes AAAA on the way back.
  - NSEC bitmaps say A where they said AAAA.
Everything else (PTR, SRV, TXT, unknown types, OPT) crosses unchanged, in order.

The message is decoded with dnspython and re-encoded with fresh name compression, so every
compression pointer in the output points into the output (RFC 1035 §4.1.4). mDNS puts flags
in the class field (RFC 6762 §10.2 cache-flush, §5.4 unicast-response): they are split off
before decoding and put back per record. Names inside NSEC rdata may be compressed in mDNS
(RFC 6762 §18.14) although dnspython forbids it for unicast DNS, so NSEC is decoded here.

Nothing here raises: a message that does not decode is returned as NOT_MDNS and the caller
passes the datagram unchanged (its receiver's own parser is the judge; dropping would lose
discovery packets that are fine but unusual). Sans-IO: bytes in, bytes out.
"""

from __future__ import annotations

import enum
import io
import struct
from dataclasses import dataclass

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.NSEC
import dns.rdtypes.util
import dns.wire

from cjb.common.packet.ipv4 import is_translatable_unicast

FE80_96 = b"\xfe\x80" + bytes(10)
TYPE_A = 1
TYPE_AAAA = 28
TYPE_OPT = 41
TYPE_NSEC = 47
CLASS_IN = 1
CLASS_FLAG = 0x8000  # cache-flush on records, unicast-response on questions
MAX_MDNS_MESSAGE = 9000  # RFC 6762 §17: no mDNS message larger than 9000 bytes
MAX_ENTRIES = 1024  # bound on work per message; 9000 bytes cannot hold more anyway
HEADER = struct.Struct("!HHHHHH")
RR_FIXED = struct.Struct("!HHIH")
# Types whose rdata holds no compressible name: kept as raw bytes, never re-parsed.
_RAW_TYPES = frozenset({TYPE_A, TYPE_AAAA, TYPE_OPT, 16})  # 16 = TXT


class Outcome(enum.Enum):
    REWRITTEN = "mdns-rewritten"
    UNCHANGED = "mdns-nothing-to-rewrite"
    NOT_MDNS = "mdns-undecodable"  # passed unchanged
    TOO_BIG = "mdns-too-big"  # would not fit even without additional records; passed unchanged
    TRIMMED = "mdns-additional-trimmed"  # rewritten, optional additional records left out


@dataclass(frozen=True, slots=True)
class _Question:
    name: dns.name.Name
    qtype: int
    qclass: int  # raw, flag bit included


@dataclass(frozen=True, slots=True)
class _Record:
    section: int  # 0 answer, 1 authority, 2 additional
    name: dns.name.Name
    rtype: int
    rclass: int  # raw, flag bit included (OPT: the UDP payload size)
    ttl: int
    rdata: dns.rdata.Rdata | bytes  # bytes for _RAW_TYPES and generic rdata


@dataclass(frozen=True, slots=True)
class _Message:
    ident: int
    flags: int
    questions: tuple[_Question, ...]
    records: tuple[_Record, ...]


@dataclass(frozen=True, slots=True)
class Rewrite:
    outcome: Outcome
    payload: bytes | None  # the new DNS message, when outcome is REWRITTEN or TRIMMED


def rewrite_to_service(message: bytes, limit: int) -> Rewrite:
    """`limit`: the largest DNS message that fits the service link (MTU minus headers)."""
    return _rewrite(message, limit, to_service=True)


def rewrite_to_lan(message: bytes, limit: int) -> Rewrite:
    return _rewrite(message, limit, to_service=False)


def _rewrite(message: bytes, limit: int, *, to_service: bool) -> Rewrite:
    if len(message) > MAX_MDNS_MESSAGE:
        return Rewrite(Outcome.NOT_MDNS, None)
    try:
        parsed = _decode(message)
    except Exception:  # dnspython raises many types on hostile input; none may escape
        return Rewrite(Outcome.NOT_MDNS, None)
    if parsed is None:
        return Rewrite(Outcome.NOT_MDNS, None)
    changed, questions, records = _translate(parsed, to_service)
    if not changed:
        return Rewrite(Outcome.UNCHANGED, None)
    limit = min(limit, MAX_MDNS_MESSAGE)
    try:
        out = _encode(parsed.ident, parsed.flags, questions, records)
        trimmed = False
        # RFC 6763 §12: additional records are hints a client can ask for again; shed
        # them (last first) before giving up on a message that outgrew the link.
        while len(out) > limit:
            idx = _last_droppable_additional(records)
            if idx is None:
                return Rewrite(Outcome.TOO_BIG, None)
            records = records[:idx] + records[idx + 1 :]
            out = _encode(parsed.ident, parsed.flags, questions, records)
            trimmed = True
    except Exception:
        return Rewrite(Outcome.NOT_MDNS, None)
    return Rewrite(Outcome.TRIMMED if trimmed else Outcome.REWRITTEN, out)


def _last_droppable_additional(records: tuple[_Record, ...]) -> int | None:
    for idx in range(len(records) - 1, -1, -1):
        rec = records[idx]
        if rec.section == 2 and rec.rtype != TYPE_OPT:
            return idx
    return None


# ------------------------------------------------------------------------- decoding


def _decode(message: bytes) -> _Message | None:
    if len(message) < HEADER.size:
        return None
    ident, flags, qd, an, ns, ar = HEADER.unpack_from(message)
    if qd + an + ns + ar > MAX_ENTRIES:
        return None
    parser = dns.wire.Parser(message, HEADER.size)
    questions = []
    for _ in range(qd):
        name = parser.get_name(decompress=True)
        qtype, qclass = parser.get_struct("!HH")
        questions.append(_Question(name, qtype, qclass))
    records = []
    for section, n in ((0, an), (1, ns), (2, ar)):
        for _ in range(n):
            name = parser.get_name(decompress=True)
            rtype, rclass, ttl, rdlen = parser.get_struct("!HHIH")
            with parser.restrict_to(rdlen):
                rdata = _decode_rdata(parser, rtype, rclass, rdlen)
            records.append(_Record(section, name, rtype, rclass, ttl, rdata))
    # Trailing bytes after the counted records: not a message we understand.
    if parser.remaining():
        return None
    return _Message(ident, flags, tuple(questions), tuple(records))


def _decode_rdata(
    parser: dns.wire.Parser, rtype: int, rclass: int, rdlen: int
) -> dns.rdata.Rdata | bytes:
    if rtype in _RAW_TYPES:
        return parser.get_bytes(rdlen)
    if rtype == TYPE_NSEC:
        nxt = parser.get_name(decompress=True)  # RFC 6762 §18.14: may be compressed
        bitmap = dns.rdtypes.util.Bitmap.from_wire_parser(parser)
        return _nsec(nxt, bitmap.windows)
    rdclass = dns.rdataclass.RdataClass.make(rclass & ~CLASS_FLAG)
    rdata = dns.rdata.from_wire_parser(rdclass, dns.rdatatype.RdataType.make(rtype), parser)
    if isinstance(rdata, dns.rdata.GenericRdata):
        return bytes(rdata.data)  # RFC 3597: unknown types carry no compressed names
    return rdata


# ------------------------------------------------------------------------- rewriting


def _translate(
    msg: _Message, to_service: bool
) -> tuple[bool, tuple[_Question, ...], tuple[_Record, ...]]:
    changed = False
    questions: list[_Question] = []
    seen: set[tuple[dns.name.Name, int, int]] = set()
    ask_from, ask_to = (TYPE_A, TYPE_AAAA) if to_service else (TYPE_AAAA, TYPE_A)
    for q in msg.questions:
        if q.qtype == ask_from and q.qclass & ~CLASS_FLAG == CLASS_IN:
            q = _Question(q.name, ask_to, q.qclass)
            changed = True
        key = (q.name, q.qtype, q.qclass & ~CLASS_FLAG)
        if key in seen:  # asked for both A and AAAA: one question is enough
            changed = True
            continue
        seen.add(key)
        questions.append(q)

    records: list[_Record] = []
    for rec in msg.records:
        new = _translate_record(rec, to_service)
        if new is not rec:
            changed = True
        if new is not None:
            records.append(new)
    return changed, tuple(questions), tuple(records)


def _translate_record(rec: _Record, to_service: bool) -> _Record | None:
    """The record to send instead (the same object when unchanged), or None to remove it."""
    if rec.rclass & ~CLASS_FLAG != CLASS_IN:
        return rec
    data = rec.rdata
    if rec.rtype == TYPE_A and isinstance(data, bytes) and len(data) == 4:
        if to_service and is_translatable_unicast(data):
            return _Record(rec.section, rec.name, TYPE_AAAA, rec.rclass, rec.ttl, FE80_96 + data)
        return rec
    if rec.rtype == TYPE_AAAA and isinstance(data, bytes) and len(data) == 16:
        if data[:2] != b"\xfe\x80":
            return rec  # global or ULA: routable, not ours to judge
        if data[:12] == FE80_96 and is_translatable_unicast(data[12:]):
            if to_service:
                return rec  # already in the service link's form (e.g. a known answer)
            return _Record(rec.section, rec.name, TYPE_A, rec.rclass, rec.ttl, data[12:])
        return None  # a link-local address of the other link: wrong on this side
    if rec.rtype == TYPE_NSEC and isinstance(data, dns.rdtypes.ANY.NSEC.NSEC):
        swapped = _swap_bitmap(data, TYPE_A if to_service else TYPE_AAAA)
        if swapped is None:
            return rec
        return _Record(rec.section, rec.name, rec.rtype, rec.rclass, rec.ttl, swapped)
    return rec


def _swap_bitmap(
    nsec: dns.rdtypes.ANY.NSEC.NSEC, present_from: int
) -> dns.rdtypes.ANY.NSEC.NSEC | None:
    """NSEC asserting `present_from` (A or AAAA) exists, rewritten to assert the other."""
    types = set()
    for window, bitmap in nsec.windows:
        for i, byte in enumerate(bitmap):
            for bit in range(8):
                if byte & (0x80 >> bit):
                    types.add(window * 256 + i * 8 + bit)
    present_to = TYPE_AAAA if present_from == TYPE_A else TYPE_A
    # The other side's address type: asserted exactly when the address we translate is.
    new = set(types)
    new.discard(present_to)
    if present_from in types:
        new.discard(present_from)
        new.add(present_to)
    if new == types:
        return None
    rdtypes = [dns.rdatatype.RdataType.make(t) for t in sorted(new)]
    bitmap = dns.rdtypes.util.Bitmap.from_rdtypes(rdtypes)
    return _nsec(nsec.next, bitmap.windows)


def _nsec(
    nxt: dns.name.Name, windows: list[tuple[int, bytes]] | tuple[tuple[int, bytes], ...]
) -> dns.rdtypes.ANY.NSEC.NSEC:
    return dns.rdtypes.ANY.NSEC.NSEC(  # type: ignore[no-untyped-call]
        dns.rdataclass.IN, dns.rdatatype.NSEC, nxt, windows
    )


# ------------------------------------------------------------------------- encoding


def _encode(
    ident: int, flags: int, questions: tuple[_Question, ...], records: tuple[_Record, ...]
) -> bytes:
    counts = [0, 0, 0]
    for rec in records:
        counts[rec.section] += 1
    out = io.BytesIO()
    out.write(HEADER.pack(ident, flags, len(questions), *counts))
    compress: dns.name.CompressType = {}
    for q in questions:
        q.name.to_wire(out, compress)
        out.write(struct.pack("!HH", q.qtype, q.qclass))
    for rec in records:
        rec.name.to_wire(out, compress)
        out.write(RR_FIXED.pack(rec.rtype, rec.rclass, rec.ttl, 0))
        start = out.tell()
        if isinstance(rec.rdata, bytes):
            out.write(rec.rdata)
        elif rec.rtype == TYPE_NSEC:
            # Next name uncompressed: valid everywhere, and what RFC 4034 §4.1.1 asks.
            rec.rdata.to_wire(out, None)
        else:
            rec.rdata.to_wire(out, compress)
        end = out.tell()
        out.seek(start - 2)
        out.write(struct.pack("!H", end - start))
        out.seek(end)
    return out.getvalue()
