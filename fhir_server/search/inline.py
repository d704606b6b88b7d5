"""Index keys kept in the resource's own document, for a type written on every access.

A type listed with `inline` in indexed_subsets.json (AuditEvent: one per request) keeps
the first row of each listed parameter code as top-level fields of its current
document, `i_<code>_<slot>` (slot `k`, `c` or `h`, as in a row), each with a
single-field index; every other row (a second patient, the hundredth entity of a
search's event) is stored as a row of `<Type>_idx`, as for any type. On the embedded
store a stored document costs about what a whole indexed read does, so an event of one
document instead of twelve is most of what its audit costs (docs/audit.md, "Cost").

A search of such a type asks both places and takes the union: a row filter becomes a
filter on the document's fields (`translated`), and the rows are asked as before, which
also finds resources stored before their keys were kept inline.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any

from fhir_server.search.extract import Row
from fhir_server.search.keys import SEP
from fhir_server.search.parameters import inline_codes

Document = dict[str, Any]
SLOTS = ("k", "c", "h")
PREFIX = "i_"


def field(code: str, slot: str) -> str:
    """`agent:identifier`, `c` -> `i_agent_identifier_c` (a plain name: no path to quote)."""
    return f"{PREFIX}{code.replace(':', '_').replace('-', '_')}_{slot}"


@cache
def declared(resource_type: str) -> dict[str, str]:
    """Parameter code -> the slots kept inline (`"kc"`); empty for a type without."""
    return inline_codes(resource_type)


@cache
def indexed_fields(resource_type: str) -> tuple[str, ...]:
    return tuple(
        field(code, slot) for code, slots in declared(resource_type).items() for slot in slots
    )


def code_of(value: str) -> str | None:
    """The parameter code a key starts with; None for a value that is not a key."""
    code, separator, _ = value.partition(SEP)
    return code if separator else None


def split(resource_type: str, rows: list[Row]) -> tuple[Document, list[Row]]:
    """The fields of the rows kept inline, and the rows left for `<Type>_idx`."""
    inline = declared(resource_type)
    if not inline:
        return {}, rows
    fields: Document = {}
    left: list[Row] = []
    taken: set[str] = set()
    for row in rows:
        code = code_of(row["k"])
        allowed = inline.get(code or "", "")
        # inline only a row whose every field is a slot this code keeps
        if code is None or code in taken or not set(row) <= set(allowed):
            left.append(row)
            continue
        slots = [slot for slot in SLOTS if slot in row]
        taken.add(code)
        fields.update({field(code, slot): row[slot] for slot in slots})
    return fields, left


def translated(resource_type: str, row_filter: Document) -> list[Document]:
    """Filters on the inline fields that together match what `row_filter` matches among
    the keys kept inline (their union); none when no inline field can match."""
    inline = declared(resource_type)
    if not inline:
        return []
    per_code: dict[str, dict[str, list[Any]]] = {}
    expressions: list[Any] = []
    for name, condition in row_filter.items():
        if name == "$expr":
            expressions.append(condition)
            continue
        if name not in SLOTS:
            raise ValueError(f"an index row filter names {name!r}")
        for code, part in _by_code(condition):
            if name not in inline.get(code, ""):
                continue
            per_code.setdefault(code, {}).setdefault(name, []).append(part)
    filters: list[Document] = []
    for code, conditions in per_code.items():
        if set(conditions) != {name for name in row_filter if name != "$expr"}:
            continue  # a field of the filter names another code: no one row matches both
        if any(len(parts) != 1 for parts in conditions.values()):
            # a multi-field filter whose $in mixes codes: never built by the compiler
            raise ValueError("an index row filter mixes parameter codes across fields")
        built = {field(code, name): parts[0] for name, parts in conditions.items()}
        if expressions:
            built["$expr"] = _renamed(expressions[0], code)
        filters.append(built)
    return filters


def _by_code(condition: Any) -> Iterable[tuple[str, Any]]:
    """The condition split by the parameter code of its keys: `$in` lists may mix codes
    (a reference by id and by identifier); a range's bounds share one code."""
    if isinstance(condition, str):
        code = code_of(condition)
        if code is None:
            raise ValueError("an index row filter value is not a key")
        return [(code, condition)]
    if not isinstance(condition, dict):
        raise ValueError("an index row filter condition is neither a key nor operators")
    if set(condition) == {"$in"}:
        grouped: dict[str, list[str]] = {}
        for value in condition["$in"]:
            code = code_of(value)
            if code is None:
                raise ValueError("an index row filter value is not a key")
            grouped.setdefault(code, []).append(value)
        return [(code, {"$in": values}) for code, values in grouped.items()]
    codes = {code_of(bound) for name, bound in condition.items() if name != "$regex"}
    if len(codes) != 1 or None in codes:
        raise ValueError("an index row range does not name one parameter code")
    (code,) = codes
    assert code is not None
    return [(code, condition)]


def _renamed(expression: Any, code: str) -> Any:
    """An `$expr` over a row's fields (`"$k"`) over the inline fields of `code`."""
    if isinstance(expression, str) and expression.startswith("$") and expression[1:] in SLOTS:
        return f"${field(code, expression[1:])}"
    if isinstance(expression, list):
        return [_renamed(item, code) for item in expression]
    if isinstance(expression, dict):
        return {name: _renamed(value, code) for name, value in expression.items()}
    return expression
