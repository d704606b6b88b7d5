"""token parameters: `code`, `system|code`, `|code`, `system|`, :not, :text, :of-type."""

from __future__ import annotations

from fhir_server.search.keys import fold, key, prefix_range
from fhir_server.search.nodes import Clause, RowQuery, exact, invalid, ranged

MODIFIERS = frozenset({"", "not", "text", "of-type", "missing"})


def compile_token(code: str, modifier: str, values: list[str]) -> Clause:
    if modifier not in MODIFIERS:
        raise invalid(f"{code}:{modifier}", "modifier not supported on a token parameter")
    alternatives = [_one(code, modifier, value) for value in values]
    return Clause(tuple(alternatives), negate=modifier == "not")


def _one(code: str, modifier: str, value: str) -> RowQuery:
    if modifier == "text":
        return ranged("k", prefix_range(key(f"{code}:text", fold(value))), cost=2)
    if modifier == "of-type":
        parts = value.split("|")
        if len(parts) != 3 or not all(parts):
            raise invalid(f"{code}:of-type", "expects system|code|value")
        system, type_code, identifier = parts
        return exact("k", key(f"{code}:of-type", system, f"{type_code}|{identifier}"))
    if "|" not in value:
        if not value:
            raise invalid(code, "empty token")
        return exact("c", key(code, value), cost=1)
    system, _, token = value.partition("|")
    if token:
        return exact("k", key(code, system, token))
    if not system:
        raise invalid(code, "'|' alone is not a token")
    return ranged("k", prefix_range(key(code, system, "")), cost=2)
