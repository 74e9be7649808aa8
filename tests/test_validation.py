"""One layout for pydantic problems at every edge: "where: what", never the input value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import (
    BaseModel,
    ConfigDict,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from cjb.common.config_file import ConfigFileError, load_json_model
from cjb.common.validation import field_path, validation_problems


class _Tenant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vni: int
    secret: str = ""

    @field_validator("vni")
    @classmethod
    def _small(cls, v: int) -> int:
        if v > 100:
            raise ValueError("VNI above 100; pick 1..100")
        return v


class _Doc(BaseModel):
    tenants: dict[Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+$")], _Tenant]
    ports: list[int] = []


def _problems(raw: object, **kw: str) -> list[str]:
    with pytest.raises(ValidationError) as info:
        _Doc.model_validate(raw)
    return validation_problems(info.value, **kw)


@pytest.mark.parametrize(
    ("loc", "expected"),
    [
        (("tenants", "t1", "vni"), "tenants.t1.vni"),
        (("ports", 2), "ports[2]"),
        ((0, "port"), "[0].port"),
        (("tenants", "a/b", "[key]"), "tenants.a/b (key)"),
        ((), "(top level)"),
    ],
)
def test_field_path_is_readable(loc: tuple[int | str, ...], expected: str) -> None:
    assert field_path(loc) == expected


def test_each_problem_says_where_and_what() -> None:
    raw = {
        "tenants": {"t1": {"vni": 101}, "A/B": {"vni": 1}, "t2": {"vni": "x"}},
        "ports": [1, "z"],
    }
    assert sorted(_problems(raw)) == sorted(
        [
            "tenants.t1.vni: VNI above 100; pick 1..100",  # pydantic's "Value error, " is dropped
            "tenants.A/B (key): String should match pattern '^[a-z0-9]+$'",
            "tenants.t2.vni: Input should be a valid integer, unable to parse string as an integer",
            "ports[1]: Input should be a valid integer, unable to parse string as an integer",
        ]
    )


def test_top_level_and_prefix() -> None:
    assert _problems([]) == ["(top level): Input should be a valid dictionary or instance of _Doc"]
    assert _problems([], top="body") == [
        "body: Input should be a valid dictionary or instance of _Doc"
    ]
    with pytest.raises(ValidationError) as info:
        TypeAdapter(list[_Tenant]).validate_python([{"vni": 1}, {}])
    assert validation_problems(info.value, prefix="catalog") == ["catalog[1].vni: Field required"]


def test_input_values_are_never_echoed() -> None:
    # Values may be keys or nonces: only locations and pydantic's own words appear.
    problems = _problems({"tenants": {"t1": {"vni": 1, "secret": 7, "x": "hunter2-key"}}})
    assert problems == [
        "tenants.t1.secret: Input should be a valid string",
        "tenants.t1.x: Extra inputs are not permitted",
    ]
    assert not any("hunter2" in p for p in problems)


def test_config_file_keeps_its_multi_line_layout(tmp_path: Path) -> None:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"tenants": {"t1": {"vni": 101}}, "ports": ["z"]}))
    with pytest.raises(ConfigFileError) as info:
        load_json_model(path, _Doc, what="test config", missing_hint="unused")
    assert str(info.value).splitlines() == [
        f"{path}: invalid test config:",
        "  tenants.t1.vni: VNI above 100; pick 1..100",
        "  ports[0]: Input should be a valid integer, unable to parse string as an integer",
    ]
