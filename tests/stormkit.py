"""Scripts the tests run with `python -c` inside a namespace: the mDNS storm
(10,000 packets in one second), its WAN-side counter, an SSDP M-SEARCH; and for the
resilience suite's storm test, a link-layer storm that alternates between
two links, an ICMP echo probe, and the helpers that turn their output into RTTs per link."""

from __future__ import annotations

import math
import random

_STORM = """
import socket, struct, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("SOURCE", 0))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("SOURCE"))
# A PTR query for an allowed type: only the rate limit stands between it and the WAN.
q = struct.pack("!HHHHHH", 0, 0, 1, 0, 0, 0) + b"\\x05storm\\x04_ipp\\x04_tcp\\x05local\\x00"
q += struct.pack("!HH", 12, 1)
start = time.monotonic()
for i in range(10000):
    s.sendto(q, ("224.0.0.251", 5353))
    if i % 500 == 499:   # pace to 10,000 in about one second
        time.sleep(max(0, start + (i + 1) / 10000 - time.monotonic()))
print(time.monotonic() - start)
"""


def storm_script(source: str) -> str:
    """10,000 mDNS queries from `source` (an IPv4 address in the sender's namespace)."""
    return _STORM.replace("SOURCE", source)


COUNT_WAN = """
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind((sys.argv[1], 3))
s.settimeout(0.2)
print("ready", flush=True)
n = 0
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        frame = s.recv(65535)
    except TimeoutError:
        continue
    if b"\\x05storm\\x04_ipp" in frame:
        n += 1
print(n)
"""


_MSEARCH_V6 = """
import socket, sys, time
ifindex = socket.if_nametoindex(sys.argv[1])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("SOURCE", 0, 0, ifindex))
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
msg = (b"M-SEARCH * HTTP/1.1\\r\\nHOST: [FF02::C]:1900\\r\\nMAN: \\"ssdp:discover\\"\\r\\n"
       b"MX: 1\\r\\nST: urn:schemas-upnp-org:device:Printer:1\\r\\n\\r\\n")
s.settimeout(0.5)
end = time.monotonic() + 8
while time.monotonic() < end:
    s.sendto(msg, ("ff02::c", 1900, 0, ifindex))
    try:
        data, addr = s.recvfrom(4096)
    except TimeoutError:
        continue
    print(addr[0]); print(data.decode()); break
"""


def msearch_v6_script(source: str) -> str:
    """An SSDP M-SEARCH for printers on the link named by argv[1], sent from `source`;
    prints the first responder's address and its answer."""
    return _MSEARCH_V6.replace("SOURCE", source)


# -- a LAN storm against a latency probe, control and treatment alternating

LINK_STORM = """
import json, socket, sys, time
# argv: fps (0: as fast as it goes), the schedule "link:seconds,link:seconds,...", the frames
# (hex). Sends the frames round-robin at `fps` in total, on each link of the schedule in
# turn: the generator costs the same whichever link it feeds. Prints the schedule as run
# ([link, start, end], time.monotonic(): one clock for every process on the host) and the
# frames sent per link.
fps = float(sys.argv[1])
plan = [(name, float(sec)) for name, sec in (p.rsplit(":", 1) for p in sys.argv[2].split(","))]
frames = [bytes.fromhex(h) for h in sys.argv[3:]]
socks = {}
for name, _ in plan:
    if name not in socks:
        socks[name] = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        socks[name].bind((name, 0))
sent = dict.fromkeys(socks, 0)
ran = []
n, start = 0, time.monotonic()
for name, seconds in plan:
    s, began = socks[name], time.monotonic()
    end = began + seconds
    while time.monotonic() < end:
        if fps and n > fps * (time.monotonic() - start):
            time.sleep(0.001)  # paced (CI): the 2 cores are shared with the latency probe
            continue
        for f in frames:
            try:
                s.send(f)
                sent[name] += 1
                n += 1
            except OSError:  # ENOBUFS: the qdisc is full, which is the point of a storm
                time.sleep(0.0005)
    ran.append([name, began, time.monotonic()])
print(json.dumps({"ran": ran, "sent": sent}))
"""

ECHO_PROBE = """
import json, os, select, socket, struct, sys, time
# argv: destination IPv4, interval (s), seconds. One ICMP echo request (RFC 792) per interval
# from a raw socket; prints the replies as [send time (time.monotonic()), rtt ms] and the
# number sent. (ping(8) cannot be used: iputils paces itself down to ~35/s on this path,
# too few samples for a stable p99, and prints no send times.)
dst, interval, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
ident = os.getpid() & 0xFFFF
def checksum(b):
    total = sum(struct.unpack(f"!{len(b) // 2}H", b))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
pending, replies = {}, []
seq, start = 0, time.monotonic()
next_send, stop = start, start + seconds
while True:
    now = time.monotonic()
    if now >= next_send and now < stop:
        body = struct.pack("!HH", ident, seq & 0xFFFF) + b"cjb-storm-probe!"
        csum = checksum(b"\\x08\\x00\\x00\\x00" + body)
        s.sendto(struct.pack("!BBH", 8, 0, csum) + body, (dst, 0))
        pending[seq & 0xFFFF] = now
        seq += 1
        next_send = max(next_send + interval, now)  # after a stall: no burst to catch up
    if now >= stop + 1.0:  # a reply later than 1 s is a loss
        break
    wait = max(0.0, (next_send if now < stop else stop + 1.0) - time.monotonic())
    if select.select([s], [], [], wait)[0]:
        pkt, now = s.recv(2048), time.monotonic()
        icmp = pkt[(pkt[0] & 0x0F) * 4:]
        if len(icmp) >= 8 and icmp[0] == 0:  # echo reply
            rid, rseq = struct.unpack_from("!HH", icmp, 4)
            if rid == ident and rseq in pending:
                sent_at = pending.pop(rseq)
                replies.append([sent_at, (now - sent_at) * 1000])
print(json.dumps({"sent": seq, "replies": replies}))
"""


def alternating_schedule(
    control: str, treatment: str, pairs: int, window: float, rng: random.Random
) -> list[tuple[str, float]]:
    """`pairs` control/treatment window pairs, each pair in random order and each window
    `window` +-20% long: slow drift of the shared host falls on both sides alike, and no
    periodic host activity (the gateway's 1 s status writes) lines up with one side."""
    plan = []
    for _ in range(pairs):
        pair = [control, treatment]
        rng.shuffle(pair)
        plan += [(link, round(window * rng.uniform(0.8, 1.2), 3)) for link in pair]
    return plan


def split_by_window(
    replies: list[tuple[float, float]], ran: list[tuple[str, float, float]], guard: float
) -> list[tuple[str, list[float]]]:
    """RTTs (ms) per window of the storm's schedule, as (link, rtts): a probe counts for a
    window when it was sent at least `guard` seconds after the window began and answered
    before it ended (what the previous window left queued is not counted for the next)."""
    windows = sorted(ran, key=lambda w: w[1])
    out: list[tuple[str, list[float]]] = [(link, []) for link, _, _ in windows]
    for sent, rtt in replies:
        answered = sent + rtt / 1000
        for (_link, began, ended), (_, rtts) in zip(windows, out, strict=True):
            if began + guard <= sent and answered <= ended:
                rtts.append(rtt)
                break
    return out


def pooled(windows: list[tuple[str, list[float]]], link: str, trim: int = 0) -> list[float]:
    """All RTTs of `link`'s windows, without its `trim` windows with the worst single RTT.

    Why trim: on a shared host one stall of a few hundred ms (another job, not CJB) fills
    more than 1% of ~15 s of samples, so it alone sets that side's p99 (A/A runs here:
    p99 ratios from 0.01 to 54 with one such stall). Trimming the same number of windows
    on both sides removes an isolated stall and keeps any slowdown the storm causes in
    more than `trim` windows."""
    mine = [rtts for name, rtts in windows if name == link and rtts]
    mine.sort(key=max)
    return [rtt for rtts in mine[: len(mine) - trim] for rtt in rtts]


def p99(values: list[float]) -> float:
    """The 99th percentile, nearest rank."""
    ranked = sorted(values)
    return ranked[min(len(ranked) - 1, math.ceil(0.99 * len(ranked)) - 1)]
