"""The mDNS storm used by the discovery tests: a sender and a WAN-side counter, each a
script run with `python -c` inside a namespace (issue 5: 10,000 packets in one second)."""

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
