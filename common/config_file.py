"""Reading a JSON config file into a pydantic model, with errors that name file and field.

Both sides load their config this way; each passes its own error class so its CLI can
catch exactly its own failures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from cjb.common.validation import validation_problems

Model = TypeVar("Model", bound=BaseModel)


class ConfigFileError(Exception):
    """The config file is missing or invalid; the message names the file and the field."""


def describe_validation_error(path: Path, what: str, exc: ValidationError) -> str:
    """The file, then one indented "where: what" line per problem."""
    return "\n".join([f"{path}: invalid {what}:", *(f"  {p}" for p in validation_problems(exc))])


def load_json_model(
    path: Path,
    model: type[Model],
    *,
    what: str,
    missing_hint: str,
    error: type[ConfigFileError] = ConfigFileError,
) -> Model:
    """Parse `path` as JSON and validate it as `model`; raise `error` saying what is wrong."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: no such file ({missing_hint})") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise error(describe_validation_error(path, what, exc)) from None
