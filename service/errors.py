"""The one error base class of cjb.service."""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error raised by cjb.service."""


class DirectoryError(ServiceError):
    """The tenant directory file is missing, unreadable or invalid; the message names the file
    and, when it applies, the field."""


class AddressError(ServiceError):
    """A listen/upstream address given by the operator is not usable."""
