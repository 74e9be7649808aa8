"""SSDP (UPnP Device Architecture 1.1/2.0 §1) URL rewriting between IPv4 and fe80::/96.

SSDP messages are HTTP-like headers over UDP (HTTPU). The headers that carry the device's
address are rewritten; nothing else is touched:
  - LOCATION (§1.2.2, §1.3.3): the description URL, `http://a.b.c.d:port/path`
  - AL (§1.2.2): one or more `<URL>` alternatives
  - SECURELOCATION.UPNP.ORG (DA 2.0 §1.2.2): the https description URL
  - HOST of multicast messages: `239.255.255.250:1900` <-> `[FF02::C]:1900` (§1.1.2)
To the service host, a translatable IPv4 host becomes `[fe80::<ipv4>]` (RFC 3986 §3.2.2
IP-literal). The URL carries no zone (RFC 6874 would allow `%25<zone>`, but the zone is the
receiver's interface name, which the translator cannot know): the receiver uses the
interface the message arrived on, which is what scope IDs are for. To the LAN, an
`[fe80::<ipv4>]` literal (with any zone dropped) becomes the dotted quad.

Sans-IO, never raises: a payload that is not an SSDP message is reported as NOT_SSDP and the
caller passes it unchanged. The body, if any, is never touched.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass

from cjb.common.packet.ipv4 import is_translatable_unicast

FE80_96 = b"\xfe\x80" + bytes(10)
MAX_HEADER_LINES = 64  # real SSDP messages have ~10; more is not worth the work

_START = re.compile(rb"^(?:NOTIFY \* HTTP/1\.\d|M-SEARCH \* HTTP/1\.\d|HTTP/1\.\d \d{3}\b)")
_HEADER = re.compile(rb"^(LOCATION|AL|SECURELOCATION\.UPNP\.ORG|HOST)([ \t]*:)(.*)$", re.I)
_URL_V4 = re.compile(rb"(?i)(https?://)(\d{1,3}(?:\.\d{1,3}){3})(?=[:/>\s]|$)")
_URL_V6 = re.compile(rb"(?i)(https?://)\[([0-9a-f:.]{2,45})(?:%25[^\]]{0,32})?\]")
_HOST_V4 = re.compile(rb"^([ \t]*)239\.255\.255\.250(:\d+)?([ \t]*)$")
_HOST_V6 = re.compile(rb"(?i)^([ \t]*)\[ff02::c\](:\d+)?([ \t]*)$")


class Outcome(enum.Enum):
    REWRITTEN = "ssdp-rewritten"
    UNCHANGED = "ssdp-nothing-to-rewrite"
    NOT_SSDP = "ssdp-unrecognised"  # passed unchanged
    TOO_BIG = "ssdp-too-big"  # the rewrite would exceed the link; passed unchanged


@dataclass(frozen=True, slots=True)
class Rewrite:
    outcome: Outcome
    payload: bytes | None


def rewrite_to_service(message: bytes, limit: int) -> Rewrite:
    return _rewrite(message, limit, to_service=True)


def rewrite_to_lan(message: bytes, limit: int) -> Rewrite:
    return _rewrite(message, limit, to_service=False)


def _rewrite(message: bytes, limit: int, *, to_service: bool) -> Rewrite:
    if not _START.match(message):
        return Rewrite(Outcome.NOT_SSDP, None)
    end = message.find(b"\r\n\r\n")
    if end < 0:
        end = message.find(b"\n\n")  # some stacks end lines with a bare LF
    head, body = (message, b"") if end < 0 else (message[:end], message[end:])
    lines = head.split(b"\n")
    if len(lines) > MAX_HEADER_LINES:
        return Rewrite(Outcome.NOT_SSDP, None)
    changed = False
    for i in range(1, len(lines)):
        line = lines[i]
        cr = line.endswith(b"\r")
        text = line[:-1] if cr else line
        m = _HEADER.match(text)
        if m is None:
            continue
        name, colon, value = m.group(1), m.group(2), m.group(3)
        if name.upper() == b"HOST":
            new_value = _host(value, to_service)
        else:
            new_value = _urls(value, to_service)
        if new_value != value:
            lines[i] = name + colon + new_value + (b"\r" if cr else b"")
            changed = True
    if not changed:
        return Rewrite(Outcome.UNCHANGED, None)
    out = b"\n".join(lines) + body
    if len(out) > limit:
        return Rewrite(Outcome.TOO_BIG, None)
    return Rewrite(Outcome.REWRITTEN, out)


def _host(value: bytes, to_service: bool) -> bytes:
    if to_service:
        return _HOST_V4.sub(lambda m: m.group(1) + b"[FF02::C]" + _rest(m), value)
    return _HOST_V6.sub(lambda m: m.group(1) + b"239.255.255.250" + _rest(m), value)


def _rest(m: re.Match[bytes]) -> bytes:
    return (m.group(2) or b"") + m.group(3)


def _urls(value: bytes, to_service: bool) -> bytes:
    return (_URL_V4 if to_service else _URL_V6).sub(_v4_to_v6 if to_service else _v6_to_v4, value)


def _v4_to_v6(m: re.Match[bytes]) -> bytes:
    try:
        v4 = ipaddress.IPv4Address(m.group(2).decode("ascii")).packed
    except ValueError:  # an octet above 255, or a leading zero: not an address
        return m.group(0)
    if not is_translatable_unicast(v4):
        return m.group(0)
    v6 = ipaddress.IPv6Address(FE80_96 + v4)
    return m.group(1) + b"[" + str(v6).encode("ascii") + b"]"


def _v6_to_v4(m: re.Match[bytes]) -> bytes:
    try:
        v6 = ipaddress.IPv6Address(m.group(2).decode("ascii")).packed
    except ValueError:
        return m.group(0)
    if v6[:12] != FE80_96 or not is_translatable_unicast(v6[12:]):
        return m.group(0)
    return m.group(1) + str(ipaddress.IPv4Address(v6[12:])).encode("ascii")
