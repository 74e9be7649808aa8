"""Appliance image versions, as the update bundle, the gateway and the board spell them."""

from __future__ import annotations

import re

VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+~_-]{0,63}$")


class VersionError(ValueError):
    """Not an image version; the message says what one looks like."""


def check_version(version: str) -> str:
    if not VERSION_RE.match(version):
        raise VersionError(
            f"version {version!r}: 1-64 characters of A-Z a-z 0-9 . + ~ _ -, "
            "starting with a letter or digit"
        )
    return version
