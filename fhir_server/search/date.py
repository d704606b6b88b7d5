"""date parameters: prefixes over implicit precision ranges (`2024-03` is all of March).

A target value is the range [lo, hi) in its row keys `k` and `h`; the search value is
[low, high). The spec's rules (R4 search.html#prefix) become key ranges on one indexed
field each.
"""

from __future__ import annotations

import time

from fhir_server.search.dates import date_range
from fhir_server.search.keys import TOP, instant_key, key
from fhir_server.search.nodes import Clause, RowQuery, invalid
from fhir_server.search.prefixes import split_prefix

MODIFIERS = frozenset({"", "missing"})


def compile_date(code: str, modifier: str, values: list[str]) -> Clause:
    if modifier not in MODIFIERS:
        raise invalid(f"{code}:{modifier}", "modifier not supported on a date parameter")
    parsed = [_parse(code, value) for value in values]
    if any(prefix == "ne" for prefix, _, _ in parsed):
        if len(parsed) > 1:
            raise invalid(code, "ne cannot be combined with other values by comma")
        _, low, high = parsed[0]
        return Clause(tuple(_queries(code, "eq", low, high)), negate=True)
    return Clause(
        tuple(q for prefix, low, high in parsed for q in _queries(code, prefix, low, high))
    )


def _parse(code: str, value: str) -> tuple[str, int, int]:
    prefix, text = split_prefix(value)
    bounds = date_range(text.replace(" ", "+"))
    if bounds is None:
        raise invalid(code, f"{value!r} is not a FHIR date, dateTime or instant")
    return prefix, bounds[0], bounds[1]


def _queries(code: str, prefix: str, low: int, high: int) -> list[RowQuery]:
    floor, ceiling = key(code, ""), key(code, TOP)

    def k(ms: int) -> str:
        return key(code, instant_key(ms))

    within = RowQuery((("k", {"$gte": k(low), "$lt": k(high)}), ("h", {"$lte": k(high)})), 3)
    above = RowQuery((("h", {"$gt": k(high), "$lt": ceiling}),), 3)
    below = RowQuery((("k", {"$gte": floor, "$lt": k(low)}),), 3)
    if prefix == "eq":
        return [within]
    if prefix in ("gt",):
        return [above]
    if prefix == "lt":
        return [below]
    if prefix == "ge":
        return [above, within]
    if prefix == "le":
        return [below, within]
    if prefix == "sa":
        return [RowQuery((("k", {"$gte": k(high), "$lt": ceiling}),), 3)]
    if prefix == "eb":
        return [RowQuery((("h", {"$gte": floor, "$lte": k(low)}),), 3)]
    # ap: overlap with the value widened by 10% of its distance from now (spec's advice)
    slack = max(abs(time.time_ns() // 1_000_000 - low) // 10, 24 * 3600 * 1000)
    return [
        RowQuery(
            (
                ("k", {"$gte": floor, "$lt": k(high + slack)}),
                ("h", {"$gt": k(low - slack), "$lt": ceiling}),
            ),
            3,
        )
    ]
