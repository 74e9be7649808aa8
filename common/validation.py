"""pydantic validation errors as short "where: what" lines, one layout for every edge.

Config files, the tenant directory and the control API all validate untrusted input with
pydantic; each caller keeps its own outer layout (lines for files, "; " for API answers) but
the problems read the same everywhere. Only field locations and messages are used, never the
input values: those may be keys or nonces.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

# Messages pydantic puts in front of the text of a ValueError/AssertionError raised by our own
# validators; the text after it already says what is wrong.
_WRAPPER_PREFIXES = ("Value error, ", "Assertion failed, ")


def field_path(loc: Sequence[int | str], top: str = "(top level)") -> str:
    """A readable field path: ``tenants.t1.vni``, ``catalog[0].port``; `top` when empty.

    List positions render as ``[i]``; pydantic's ``[key]`` marker (the dict key itself is
    invalid, not its value) renders as a `` (key)`` suffix.
    """
    path = ""
    is_key = False
    for part in loc:
        if part == "[key]":
            is_key = True
        elif isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    if not path:
        return top
    return f"{path} (key)" if is_key else path


def problem_message(msg: str) -> str:
    for prefix in _WRAPPER_PREFIXES:
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def validation_problems(
    exc: ValidationError, *, prefix: str = "", top: str = "(top level)"
) -> list[str]:
    """One "where: what" line per problem in `exc`.

    `prefix` names the whole document when its locations start below it (``catalog`` makes a
    list body's ``[0].port`` read ``catalog[0].port``); `top` names it when a problem has no
    location at all (the document itself is wrong, e.g. not JSON or not an object).
    """
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = err["loc"]
        where = field_path(((prefix,) if prefix else ()) + tuple(loc), top)
        lines.append(f"{where}: {problem_message(err['msg'])}")
    return lines
