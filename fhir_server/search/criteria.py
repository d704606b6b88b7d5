"""Conditional-interaction criteria (`identifier=sys|1&family=x`) -> matching ids.

Each parameter becomes a query over the type's index collection; repeated parameters
AND, comma-separated values OR, as in search.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fhir_server.errors import FhirError
from fhir_server.search.extract import fold
from fhir_server.search.parameters import parameters_for

IGNORED = frozenset({"_format", "_pretty", "_summary", "_elements", "_count", "_sort"})


def parse_criteria(criteria: str) -> list[tuple[str, str]]:
    """`Patient?identifier=a|b` or `identifier=a|b` -> [("identifier", "a|b")]."""
    _, _, query = criteria.rpartition("?")
    return [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in IGNORED]


def row_filters(resource_type: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """One index-row filter per parameter; a resource must match all of them."""
    known = parameters_for(resource_type)
    filters: list[dict[str, Any]] = []
    for name, raw in params:
        code, _, modifier = name.partition(":")
        alternatives = [
            _value_filter(resource_type, code, modifier, known, v) for v in raw.split(",")
        ]
        filters.append(alternatives[0] if len(alternatives) == 1 else {"$or": alternatives})
    return filters


def _value_filter(
    resource_type: str, code: str, modifier: str, known: dict[str, Any], value: str
) -> dict[str, Any]:
    if code == "_id":
        return {"p": "_id", "v": value}
    parameter = known.get(code)
    if parameter is None:
        raise FhirError(
            "MB-1016", f"unknown search parameter {code!r} for {resource_type}", expression=code
        )
    if parameter.type == "token":
        if "|" in value:
            system, _, token = value.partition("|")
            return {"p": code, "s": system, "v": token} if token else {"p": code, "s": system}
        return {"p": code, "v": value}
    if parameter.type == "string":
        if modifier == "exact":
            return {"p": code, "x": value}
        folded = fold(value)
        return {"p": code, "v": {"$gte": folded, "$lt": folded + "\uffff"}}
    return {"p": code, "v": value}
