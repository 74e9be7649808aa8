"""Which Debian mirror to build from: the one this machine's apt already uses.

Reads one-line (`deb URI SUITE COMPONENTS`) and deb822 (.sources) files; turns them into
mmdebstrap mirror lines for the recipe's suite, its -updates and its -security suites.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY = "http://deb.debian.org/debian-security"


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]


def parse_one_line(text: str) -> list[AptSource]:
    out = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 3 or words[0] != "deb":
            continue
        words = words[1:]
        if words[0].startswith("["):  # [options], possibly several words
            end = next((i for i, w in enumerate(words) if w.endswith("]")), len(words) - 1)
            words = words[end + 1 :]
        if len(words) >= 2:
            out.append(AptSource(words[0].rstrip("/"), (words[1],)))
    return out


def parse_deb822(text: str) -> list[AptSource]:
    out: list[AptSource] = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled") == "no":
            continue
        suites = tuple(fields.get("suites", "").split())
        out.extend(AptSource(uri.rstrip("/"), suites) for uri in fields.get("uris", "").split())
    return out


def host_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    found: list[AptSource] = []
    one_line = etc_apt / "sources.list"
    if one_line.is_file():
        found += parse_one_line(one_line.read_text())
    parts = etc_apt / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".list":
                found += parse_one_line(path.read_text())
            elif path.suffix == ".sources":
                found += parse_deb822(path.read_text())
    return found


def mirror_lines(suite: str, sources: list[AptSource]) -> tuple[str, ...]:
    """mmdebstrap mirror arguments: main, -updates and -security, from the host's sources."""
    main = next((s.uri for s in sources if suite in s.suites), DEFAULT_MIRROR)
    security = next((s.uri for s in sources if f"{suite}-security" in s.suites), DEFAULT_SECURITY)
    return (
        f"deb {main} {suite} main",
        f"deb {main} {suite}-updates main",
        f"deb {security} {suite}-security main",
    )
