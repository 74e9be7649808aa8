"""The stateless frame translator: IPv4 <-> IPv6 fe80::/96 (RFC 7915), ARP <-> NDP.

Sans-IO: `Translator.translate(frame, direction)` takes one Ethernet frame and returns
the frames to emit on either port, or a drop with a named reason. No sockets, no clocks.
"""

from cjb.gateway.xlat.config import ConfigError, UdpZeroChecksum, XlatConfig
from cjb.gateway.xlat.counters import XlatCounters
from cjb.gateway.xlat.result import Direction, DropReason, Emit, Side, XlatResult
from cjb.gateway.xlat.translator import Translator

__all__ = [
    "ConfigError",
    "Direction",
    "DropReason",
    "Emit",
    "Side",
    "Translator",
    "UdpZeroChecksum",
    "XlatConfig",
    "XlatCounters",
    "XlatResult",
]
