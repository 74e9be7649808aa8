"""Where TCP (RFC 9293) and UDP (RFC 768) keep their checksums; both cover a pseudo-header."""

from __future__ import annotations

from cjb.common.packet.ipv4 import PROTO_TCP, PROTO_UDP

UDP_HEADER_LEN = 8
TCP_MIN_HEADER_LEN = 20

# protocol -> offset of the checksum field from the start of the transport header
CHECKSUM_OFFSET = {PROTO_TCP: 16, PROTO_UDP: 6}
