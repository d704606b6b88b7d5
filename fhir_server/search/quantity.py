"""quantity parameters: `[prefix]number|system|code`, `number||unit`, prefixes as numbers."""

from __future__ import annotations

from fhir_server.search.nodes import Clause, invalid
from fhir_server.search.number import Extra, numeric_clause

MODIFIERS = frozenset({"", "missing"})


def compile_quantity(code: str, modifier: str, values: list[str]) -> Clause:
    if modifier not in MODIFIERS:
        raise invalid(f"{code}:{modifier}", "modifier not supported on a quantity parameter")
    parsed: list[tuple[str, Extra]] = []
    for value in values:
        number, *rest = value.split("|")
        if len(rest) not in (0, 2):
            raise invalid(code, "expects number, number|system|code or number||unit")
        if not rest:
            parsed.append((number, ()))
            continue
        system, unit = rest
        extra: list[tuple[str, object]] = [("s", system)] if system else []
        if unit and system:
            extra.append(("u", unit))
            parsed.append((number, tuple(extra)))
        elif unit:  # no system: the unit may be the code or the human-readable unit
            parsed.append((number, (("u", unit),)))
            parsed.append((number, (("n", unit),)))
        else:
            parsed.append((number, tuple(extra)))
    return numeric_clause(code, parsed)
