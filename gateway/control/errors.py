"""The control plane's one error type, mapped to an HTTP status and an ErrorBody at the API edge."""

from __future__ import annotations


class ControlError(Exception):
    """Something the caller did or asked is refused.

    `code` is the machine-readable ErrorBody.error (e.g. "unknown-serial"), `status` the HTTP
    status the API answers with, and the message says what is wrong and how to fix it.
    """

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message
