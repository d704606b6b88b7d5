"""number parameters: prefixes with the precision of the value (`100` is [99.5, 100.5))."""

from __future__ import annotations

from decimal import Decimal

from fhir_server.search.keys import TOP, decimal, key, number_key
from fhir_server.search.nodes import Clause, RowQuery, invalid
from fhir_server.search.prefixes import split_prefix

MODIFIERS = frozenset({"", "missing"})
Extra = tuple[tuple[str, object], ...]


def compile_number(code: str, modifier: str, values: list[str]) -> Clause:
    if modifier not in MODIFIERS:
        raise invalid(f"{code}:{modifier}", "modifier not supported on a number parameter")
    return numeric_clause(code, [(value, ()) for value in values])


def numeric_clause(code: str, values: list[tuple[str, Extra]]) -> Clause:
    """Shared by number and quantity: `extra` adds non-key conditions (system, unit)."""
    queries: list[RowQuery] = []
    negate = False
    for value, extra in values:
        prefix, text = split_prefix(value)
        number = decimal(text)
        if number is None:
            raise invalid(code, f"{value!r} is not a number")
        if prefix == "ne":
            if len(values) > 1:
                raise invalid(code, "ne cannot be combined with other values by comma")
            negate, prefix = True, "eq"
        queries.append(RowQuery((("k", _bounds(code, prefix, number)), *extra), 3))
    return Clause(tuple(queries), negate=negate)


def _bounds(code: str, prefix: str, number: Decimal) -> dict[str, str]:
    floor, ceiling = key(code, ""), key(code, TOP)

    def k(value: Decimal) -> str:
        return key(code, number_key(value))

    exponent = number.as_tuple().exponent
    half = Decimal(5) * Decimal(10) ** (int(exponent) - 1) if isinstance(exponent, int) else 0
    if prefix == "eq":
        return {"$gte": k(number - half), "$lt": k(number + half)}
    if prefix in ("gt", "sa"):
        return {"$gt": k(number), "$lt": ceiling}
    if prefix in ("lt", "eb"):
        return {"$gte": floor, "$lt": k(number)}
    if prefix == "ge":
        return {"$gte": k(number), "$lt": ceiling}
    if prefix == "le":
        return {"$gte": floor, "$lte": k(number)}
    slack = abs(number) / 10  # ap: within 10%
    return {"$gte": k(number - slack), "$lte": k(number + slack)}
