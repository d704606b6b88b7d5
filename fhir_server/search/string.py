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
        return contains_query(code, folded)
    return ranged("k", prefix_range(key(code, folded)), cost=2)


def contains_pattern(code: str, folded: str) -> str:
    """A regular expression for `folded` anywhere in the value of a row `code␟value`.

    The row's code is matched by the index range, so the pattern is the bare literal,
    which the store's regex engine finds in time linear in the stored value (a leading
    `.*` made it backtrack over every position: 4 s for 200,000 characters). Only a
    literal that also occurs inside the code ("am" in "family") needs to be kept past
    the separator, and that literal is no longer than the code, so the one repeat in
    front of it costs at most that many steps per character.
    """
    literal = re.escape(folded)
    if folded in code:
        return f"{re.escape(SEP)}[^{re.escape(SEP)}]*{literal}"
    return literal


def contains_query(code: str, folded: str) -> RowQuery:
    """Rows of `code` whose folded value contains `folded` (no index serves a substring)."""
    bounds = prefix_range(key(code, ""))
    return RowQuery((("k", {**bounds, "$regex": contains_pattern(code, folded)}),), cost=4)
