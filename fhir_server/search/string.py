"""string parameters: starts-with by default, case- and accent-insensitive; :exact, :contains."""

from __future__ import annotations

import re

from fhir_server.search.keys import SEP, fold, key, prefix_range
from fhir_server.search.nodes import Clause, RowQuery, exact, invalid, ranged

MODIFIERS = frozenset({"", "exact", "contains", "text", "missing"})


def compile_string(code: str, modifier: str, values: list[str]) -> Clause:
    if modifier not in MODIFIERS:
        raise invalid(f"{code}:{modifier}", "modifier not supported on a string parameter")
    return Clause(tuple(_one(code, modifier, value) for value in values))


def _one(code: str, modifier: str, value: str) -> RowQuery:
    if not value:
        raise invalid(code, "empty string")
    if modifier == "exact":
        return exact("c", key(code, value))
    folded = fold(value)
    if modifier in ("contains", "text"):
        # no index serves a substring; the anchored prefix keeps the scan to this parameter
        pattern = f"^{re.escape(code + SEP)}.*{re.escape(folded)}"
        return RowQuery((("k", {"$regex": pattern}),), cost=4)
    return ranged("k", prefix_range(key(code, folded)), cost=2)
