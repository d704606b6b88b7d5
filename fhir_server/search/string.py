"""string parameters: starts-with by default, case- and accent-insensitive; :exact, :contains."""

from __future__ import annotations

import re
from typing import Any

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
        return contains_query(code, folded)
    return ranged("k", prefix_range(key(code, folded)), cost=2)


def contains_pattern(code: str, folded: str) -> str:
    """A regular expression for `folded` in the value of a row `code␟value`.

    Only for a literal that also occurs inside the code ("am" in "family"): it must be
    found past the separator, and that literal is no longer than the code, so the one
    repeat in front of it costs at most that many steps per character.
    """
    return f"{re.escape(SEP)}[^{re.escape(SEP)}]*{re.escape(folded)}"


def contains_query(code: str, folded: str) -> RowQuery:
    """Rows of `code` whose folded value contains `folded` (no index serves a substring).

    A literal that is not part of the code is found with `$indexOfCP` in an `$expr`,
    which the embedded store compiles to SQLite's native `instr()`: a search runs
    inside SQLite without calling back into Python (a `$regex` is a Python function
    called for every row), and is linear (a memcmp per position) for the 1 MB string
    cap. The store ignores `$indexOfCP`'s start argument and runs any nested expression
    row by row in Python, so a literal that also occurs in the code keeps the short
    `$regex` of `contains_pattern`.
    """
    bounds: dict[str, Any] = dict(prefix_range(key(code, "")))
    if folded in code:
        return RowQuery((("k", {**bounds, "$regex": contains_pattern(code, folded)}),), cost=4)
    found = {"$gte": [{"$indexOfCP": ["$k", folded]}, 0]}
    return RowQuery((("k", bounds), ("$expr", found)), cost=4)
