"""The offline adapter of the translator: pcap in, translated pcap out.

This is IO around the sans-IO core (docs/architecture.md: one thin adapter per core); it is the only
part of `cjb.gateway.xlat` that touches files or scapy. Nothing in the core imports it.
"""

from cjb.gateway.xlat.offline.pcapio import CaptureError, LinkType
from cjb.gateway.xlat.offline.runner import DirectionMode, OfflineSummary, translate_capture

__all__ = [
    "CaptureError",
    "DirectionMode",
    "LinkType",
    "OfflineSummary",
    "translate_capture",
]
