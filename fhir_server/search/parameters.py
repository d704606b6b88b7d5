"""Search-parameter definitions, loaded from search_parameters.json (data, not code)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True, slots=True)
class SearchParameter:
    code: str
    type: str  # token | string | date | reference | uri | number | quantity | composite
    expression: str
    base: tuple[str, ...]


@cache
def parameters_for(resource_type: str) -> dict[str, SearchParameter]:
    """The search parameters a resource type supports, by code."""
    return {p.code: p for p in _all() if resource_type in p.base}


@cache
def _all() -> tuple[SearchParameter, ...]:
    raw = json.loads(
        (resources.files("fhir_server.search") / "search_parameters.json").read_text("utf-8")
    )
    return tuple(
        SearchParameter(p["code"], p["type"], p["expression"], tuple(p["base"]))
        for p in raw["parameters"]
    )
