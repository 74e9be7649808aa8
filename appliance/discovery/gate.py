"""The discovery gate: every mDNS/SSDP frame between the LAN and the tunnel port passes here.

Sans-IO: `from_lan(frame, now)` / `from_wan(frame, now)` return the frames to send on the
other side (possibly rewritten) or a drop reason; counters say what happened.

Why a userspace gate and not only nftables: the allow-list needs the DNS-SD service types
inside the payload (mDNS names are compressed, so no fixed-offset match can read them), and
one response often carries allowed and forbidden services together, which only a decoder can
split. nftables does the cheap part in the kernel: discovery UDP (ports 5353/1900) never
crosses the bridge between the LAN ports and the tunnel port by itself
(`nft_rules.discovery_bridge_rules`); this gate reads those frames with AF_PACKET and sends
what it allows straight out of the other port.

Order in `from_lan`: loop guard on the source MAC (cheap), token bucket (a storm costs one
comparison per frame after the budget is spent, so a small board survives 10,000 pps), then
the allow-list and name-level loop guard (decoding).
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass

# Public names of python-zeroconf that its __all__ leaves out.
from zeroconf import (  # type: ignore[attr-defined]
    DNSIncoming,
    DNSOutgoing,
    DNSPointer,
    DNSRecord,
    DNSService,
)

from cjb.appliance.discovery.policy import (
    META_QUERY,
    AllowList,
    LoopGuard,
    TokenBucket,
    is_host_name,
    labels_of,
    service_type_of,
)
from cjb.common.packet.checksum import ones_sum, pseudo_header_sum_v4, pseudo_header_sum_v6
from cjb.common.packet.ipv4 import build_ipv4
from cjb.common.packet.ipv6 import build_ipv6

MDNS_PORT = 5353
SSDP_PORT = 1900
ETH_IPV4 = b"\x08\x00"
ETH_IPV6 = b"\x86\xdd"
UDP = 17
_ADDRESS_TYPES = frozenset({1, 28, 47, 13, 255})  # A, AAAA, NSEC, HINFO, ANY (on host names)


@dataclass(frozen=True, slots=True)
class Verdict:
    frames: tuple[bytes, ...] = ()
    drop: str | None = None


@dataclass(frozen=True, slots=True)
class _Udp:
    """A parsed Ethernet + IP + UDP frame, enough to rebuild it with a new payload."""

    eth: bytes  # 14-byte Ethernet header
    v6: bool
    tos: int
    ttl: int
    src: bytes
    dst: bytes
    sport: int
    dport: int
    payload: bytes


def parse_udp_frame(frame: bytes) -> _Udp | None:
    """Unfragmented UDP over IPv4 (any IHL) or IPv6 (no extension headers); else None."""
    ethertype = frame[12:14]
    if ethertype == ETH_IPV4 and len(frame) >= 34 and frame[14] >> 4 == 4:
        ihl = (frame[14] & 0x0F) * 4
        total = int.from_bytes(frame[16:18], "big")
        if ihl < 20 or frame[23] != UDP or int.from_bytes(frame[20:22], "big") & 0x3FFF:
            return None
        end = 14 + total
        l4 = 14 + ihl
        if end > len(frame) or l4 + 8 > end:
            return None
        src, dst = frame[26:30], frame[30:34]
        tos, ttl, v6 = frame[15], frame[22], False
    elif ethertype == ETH_IPV6 and len(frame) >= 62 and frame[14] >> 4 == 6:
        if frame[20] != UDP:
            return None
        end = 54 + int.from_bytes(frame[18:20], "big")
        l4 = 54
        if end > len(frame) or l4 + 8 > end:
            return None
        src, dst = frame[22:38], frame[38:54]
        tos = (int.from_bytes(frame[14:16], "big") >> 4) & 0xFF
        ttl, v6 = frame[21], True
    else:
        return None
    sport, dport, length = struct.unpack_from("!HHH", frame, l4)
    if length < 8 or l4 + length > end:
        return None
    payload = frame[l4 + 8 : l4 + length]
    return _Udp(frame[:14], v6, tos, ttl, src, dst, sport, dport, payload)


def rebuild(u: _Udp, payload: bytes) -> bytes:
    """The same frame with another UDP payload: lengths and checksums new."""
    length = 8 + len(payload)
    header = struct.pack("!HHHH", u.sport, u.dport, length, 0)
    if u.v6:
        pseudo = pseudo_header_sum_v6(u.src, u.dst, UDP, length)
    else:
        pseudo = pseudo_header_sum_v4(u.src, u.dst, UDP, length)
    csum = 0xFFFF - (ones_sum(header + payload) + pseudo) % 0xFFFF
    udp = header[:6] + csum.to_bytes(2, "big") + payload
    if u.v6:
        ip = build_ipv6(
            traffic_class=u.tos,
            payload_length=length,
            next_header=UDP,
            hop_limit=u.ttl,
            src=u.src,
            dst=u.dst,
        )
    else:
        ip = build_ipv4(
            tos=u.tos,
            total_length=20 + length,
            identification=0,
            flags_offset=0x4000,
            ttl=u.ttl,
            protocol=UDP,
            src=u.src,
            dst=u.dst,
        )
    return u.eth + ip + udp


class DiscoveryGate:
    def __init__(
        self,
        allow: AllowList,
        *,
        wan_pps: float,
        wan_burst: float,
        now: float,
        cloud_macs: frozenset[bytes] = frozenset(),
        own_macs: frozenset[bytes] = frozenset(),
    ) -> None:
        self.allow = allow
        self.cloud_macs = cloud_macs
        self.own_macs = own_macs
        self.to_wan_bucket = TokenBucket(wan_pps, wan_burst, now)
        self.to_lan_bucket = TokenBucket(wan_pps, wan_burst, now)
        self.loop = LoopGuard()
        self.counters: Counter[str] = Counter()

    # ---------------------------------------------------------------- entry points

    def from_lan(self, frame: bytes, now: float) -> Verdict:
        verdict = self._from_lan(frame, now)
        self._count("lan-to-wan", verdict)
        return verdict

    def from_wan(self, frame: bytes, now: float) -> Verdict:
        verdict = self._from_wan(frame, now)
        self._count("wan-to-lan", verdict)
        return verdict

    def _count(self, way: str, verdict: Verdict) -> None:
        if verdict.drop is not None:
            self.counters[f"{way}-drop-{verdict.drop}"] += 1
        self.counters[f"{way}-frames-out"] += len(verdict.frames)

    def _from_lan(self, frame: bytes, now: float) -> Verdict:
        src_mac = frame[6:12]
        if src_mac in self.cloud_macs or src_mac in self.own_macs:
            return Verdict(drop="loop-mac")  # came from the tunnel (or from us) at L2
        u = parse_udp_frame(frame)
        if u is None or not _discovery(u):
            return Verdict(drop="not-discovery")
        if not self.to_wan_bucket.take(now):
            return Verdict(drop="rate-limit")
        return self._filter(u, frame, now, to_wan=True)

    def _from_wan(self, frame: bytes, now: float) -> Verdict:
        u = parse_udp_frame(frame)
        if u is None or not _discovery(u):
            return Verdict(drop="not-discovery")
        if not self.to_lan_bucket.take(now):
            return Verdict(drop="rate-limit")
        return self._filter(u, frame, now, to_wan=False)

    def _filter(self, u: _Udp, frame: bytes, now: float, *, to_wan: bool) -> Verdict:
        try:
            if MDNS_PORT in (u.sport, u.dport):
                return self._mdns(u, frame, now, to_wan)
            return self._ssdp(u, frame, now, to_wan)
        except Exception:  # hostile payloads must never stop the gate: count and drop
            return Verdict(drop="internal-error")

    # ---------------------------------------------------------------- mDNS

    def _mdns(self, u: _Udp, frame: bytes, now: float, to_wan: bool) -> Verdict:
        msg = DNSIncoming(u.payload)
        if not msg.valid:
            return Verdict(drop="mdns-invalid")
        questions = [q for q in msg.questions if self._name_ok(q.name, q.type, None, now, to_wan)]
        records = msg.answers()
        kept = [r for r in records if self._record_ok(r, now, to_wan)]
        if not to_wan and msg.is_response():
            # Remember what the cloud *announced* (responses only: the known answers in its
            # queries are LAN records it cached, RFC 6762 §7.1), never to send it back.
            for r in kept:
                for key in _record_keys(r):
                    self.loop.remember(key, now)
        typed = [r for r in records if _is_service_record(r)]
        if typed and not any(_is_service_record(r) for r in kept):
            # Only forbidden services: their host's address records (additional section)
            # would still tell the other side about the host; none of it crosses.
            kept = []
        if not questions and not kept:
            return Verdict(drop="mdns-not-allowed")
        if len(questions) == len(msg.questions) and len(kept) == len(records):
            counted = msg.num_answers + msg.num_authorities + msg.num_additionals
            if counted == len(records):
                return Verdict((frame,))
        sections = _sections(msg, records)
        if sections is None:
            return Verdict(drop="mdns-mixed-unknown-records")
        out = DNSOutgoing(msg.flags, multicast=u.dport == MDNS_PORT, id_=msg.id)
        for q in questions:
            out.add_question(q)
        keep = {id(r) for r in kept}
        answers, authorities, additionals = sections
        for r in answers:
            if id(r) in keep:
                out.add_answer_at_time(r, 0)
        for r in authorities:
            if id(r) in keep:
                out.add_authorative_answer(r)  # type: ignore[arg-type]  # any record type
        for r in additionals:
            if id(r) in keep:
                out.add_additional_answer(r)
        packets = out.packets()
        self.counters["mdns-rewritten"] += 1
        return Verdict(tuple(rebuild(u, p) for p in packets))

    def _name_ok(self, name: str, rtype: int, alias: str | None, now: float, to_wan: bool) -> bool:
        labels = labels_of(name)
        if to_wan and self.loop.seen(".".join(labels), now):
            self.counters["mdns-loop-suppressed"] += 1
            return False
        if labels == META_QUERY:
            if alias is None:
                return True  # the enumeration question itself (RFC 6763 §9)
            st = service_type_of(labels_of(alias))
            return st is not None and self.allow.service_type_allowed(st)
        st = service_type_of(labels)
        if st is not None:
            return self.allow.service_type_allowed(st)
        return rtype in _ADDRESS_TYPES and is_host_name(labels)

    def _record_ok(self, r: DNSRecord, now: float, to_wan: bool) -> bool:
        alias = r.alias if isinstance(r, DNSPointer) else None
        if not self._name_ok(r.name, r.type, alias, now, to_wan):
            return False
        if to_wan and isinstance(r, DNSPointer) and self.loop.seen(r.alias, now):
            self.counters["mdns-loop-suppressed"] += 1
            return False
        return True

    # ---------------------------------------------------------------- SSDP

    def _ssdp(self, u: _Udp, frame: bytes, now: float, to_wan: bool) -> Verdict:
        head = u.payload.split(b"\r\n\r\n", 1)[0]
        lines = head.replace(b"\r\n", b"\n").split(b"\n")
        if len(lines) > 64:
            return Verdict(drop="ssdp-invalid")
        start = lines[0].decode("latin-1")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.decode("latin-1").partition(":")
            if sep:
                headers[name.strip().upper()] = value.strip()
        usn = headers.get("USN", "")
        uuid = usn.split("::", 1)[0].lower()
        if start.startswith("M-SEARCH"):
            st = headers.get("ST", "")
            ok = st in ("ssdp:all", "upnp:rootdevice") or st.startswith("uuid:")
            if not ok and not self.allow.upnp_type_allowed(st):
                return Verdict(drop="ssdp-not-allowed")
            return Verdict((frame,))
        if start.startswith("NOTIFY"):
            kind = headers.get("NT", "")
        elif start.startswith("HTTP/1."):
            kind = headers.get("ST", "")
        else:
            return Verdict(drop="ssdp-invalid")
        if to_wan and uuid and self.loop.seen(uuid, now):
            self.counters["ssdp-loop-suppressed"] += 1
            return Verdict(drop="ssdp-loop")
        # Generic announcements (upnp:rootdevice, uuid:...) do not say what the device is;
        # devices send a typed one alongside (UDA §1.2.2), which is judged on its type.
        if not self.allow.upnp_type_allowed(kind):
            return Verdict(drop="ssdp-not-allowed")
        if not to_wan and uuid:
            self.loop.remember(uuid, now)
        return Verdict((frame,))


def _discovery(u: _Udp) -> bool:
    return MDNS_PORT in (u.sport, u.dport) or SSDP_PORT in (u.sport, u.dport)


def _is_service_record(r: DNSRecord) -> bool:
    return service_type_of(labels_of(r.name)) is not None or labels_of(r.name) == META_QUERY


def _record_keys(r: DNSRecord) -> list[str]:
    """Instance and host names the cloud owns. Not the PTR owner: `_http._tcp.local` is
    shared by every service of the type, LAN ones included."""
    if isinstance(r, DNSPointer):
        return [r.alias]
    if isinstance(r, DNSService):
        return [r.name, r.server]
    return [r.name]


def _sections(
    msg: DNSIncoming, records: list[DNSRecord]
) -> tuple[list[DNSRecord], list[DNSRecord], list[DNSRecord]] | None:
    """Split zeroconf's flat record list back into sections; None when zeroconf skipped
    records it does not know (then the counts no longer say where each one belongs)."""
    an, ns, ar = msg.num_answers, msg.num_authorities, msg.num_additionals
    if an + ns + ar != len(records):
        return None
    return records[:an], records[an : an + ns], records[an + ns :]
