"""Reading and writing classic pcap files through scapy's raw reader and writer.

No hand-written pcap parser: scapy's `RawPcapReader`/`RawPcapWriter` are maintained, handle
both byte orders, nanosecond files and gzip, and bound hostile record lengths. This module
only adds the link-type check, timestamp pass-through and errors with readable messages.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from scapy.error import Scapy_Exception
from scapy.utils import RawPcapNgReader, RawPcapReader, RawPcapWriter

SNAPLEN = 262144  # libpcap's default; translated frames can be 20 bytes longer than input


class CaptureError(Exception):
    """A capture cannot be read or written; the message is meant for the user."""


class LinkType(enum.IntEnum):
    """The pcap link types the offline tool handles (tcpdump.org/linktypes.html)."""

    ETHERNET = 1
    RAW = 101  # raw IP, version taken from the first nibble
    IPV4 = 228
    IPV6 = 229


SUPPORTED = ", ".join(f"{t.value} ({t.name})" for t in LinkType)


class _Closing:
    """A context manager that calls `close()` on exit."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class Record:
    """One captured packet with its timestamp, kept in the file's own resolution."""

    sec: int
    frac: int  # microseconds, or nanoseconds in a nanosecond file
    data: bytes


class CaptureReader(_Closing):
    """Iterates the records of one classic pcap file of a supported link type."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            reader = RawPcapReader(str(path))
        except OSError as exc:
            raise CaptureError(f"{path}: cannot open: {exc.strerror or exc}") from exc
        except Scapy_Exception as exc:
            raise CaptureError(f"{path}: not a pcap file ({exc})") from exc
        if isinstance(reader, RawPcapNgReader):
            reader.close()
            raise CaptureError(
                f"{path}: pcapng is not supported; convert it with `editcap -F pcap IN OUT`"
            )
        self._reader = reader
        try:
            self.linktype = LinkType(reader.linktype)
        except ValueError:
            reader.close()
            raise CaptureError(
                f"{path}: unsupported link type {reader.linktype}; supported: {SUPPORTED}"
            ) from None
        self.nano: bool = bool(reader.nano)

    def __iter__(self) -> Iterator[Record]:
        # scapy ends iteration at a short record header (a capture cut off mid-write), which
        # is what tcpdump does too.
        for data, meta in self._reader:
            yield Record(sec=int(meta.sec), frac=int(meta.usec), data=bytes(data))

    def close(self) -> None:
        self._reader.close()


class CaptureWriter(_Closing):
    """Writes records to a classic pcap file, header first, so an empty result is valid."""

    def __init__(self, path: Path, linktype: LinkType, *, nano: bool = False) -> None:
        self.path = path
        self.count = 0
        try:
            self._writer = RawPcapWriter(
                str(path), linktype=int(linktype), endianness="<", nano=nano, snaplen=SNAPLEN
            )
            self._writer.write_header(None)
        except OSError as exc:
            raise CaptureError(f"{path}: cannot write: {exc.strerror or exc}") from exc

    def write(self, sec: int, frac: int, data: bytes) -> None:
        try:
            self._writer.write_packet(data, sec=sec, usec=frac)
        except OSError as exc:
            raise CaptureError(f"{self.path}: cannot write: {exc.strerror or exc}") from exc
        self.count += 1

    def close(self) -> None:
        self._writer.close()
