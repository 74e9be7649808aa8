"""A tenant's catalog as operators hand it in (API body, `cjb gateway catalog set` file):
validated as `CatalogService` entries, returned as the JSON the registry stores."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from cjb.common.control.protocol import CatalogService
from cjb.common.validation import validation_problems
from cjb.gateway.control.errors import ControlError

CATALOG = TypeAdapter(list[CatalogService])


def catalog_doc(data: str | bytes) -> list[dict[str, Any]]:
    """The registry's form of a JSON catalog, or ControlError naming each problem."""
    try:
        services = CATALOG.validate_json(data)
    except ValidationError as exc:
        problems = "; ".join(validation_problems(exc, prefix="catalog"))
        raise ControlError("bad-request", f"invalid catalog: {problems}", 400) from None
    return [s.model_dump(mode="json") for s in services]
