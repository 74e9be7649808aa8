"""Scripts the discovery tests run with `python -c` inside a namespace: the mDNS storm
(issue 5: 10,000 packets in one second), its WAN-side counter, and an SSDP M-SEARCH."""

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
