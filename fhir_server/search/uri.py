"""uri parameters: exact match; :below (path prefix) and :above (any ancestor)."""

from __future__ import annotations

from fhir_server.search.keys import key, prefix_range
from fhir_server.search.nodes import Clause, RowQuery, exact, invalid, ranged

MODIFIERS = frozenset({"", "below", "above", "missing"})


def compile_uri(code: str, modifier: str, values: list[str]) -> Clause:
    if modifier not in MODIFIERS:
        raise invalid(f"{code}:{modifier}", "modifier not supported on a uri parameter")
    alternatives: list[RowQuery] = []
    for value in values:
        if not value:
            raise invalid(code, "empty uri")
        if modifier == "below":
            alternatives.append(ranged("k", prefix_range(key(code, value)), cost=2))
        elif modifier == "above":
            parts = value.split("/")
            alternatives.extend(
                exact("k", key(code, "/".join(parts[:n]))) for n in range(3, len(parts) + 1)
            )
        else:
            alternatives.append(exact("k", key(code, value)))
    return Clause(tuple(alternatives))
