"""One criterion (`name`, `value`) of a type -> a `Clause`, through the compiler of its type."""

from __future__ import annotations

from fhir_server.registry import is_served
from fhir_server.search.date import compile_date
from fhir_server.search.keys import key, prefix_range
from fhir_server.search.nodes import ChainQuery, Clause, HasQuery, invalid, ranged
from fhir_server.search.number import compile_number
from fhir_server.search.parameters import parameters_for
from fhir_server.search.quantity import compile_quantity
from fhir_server.search.reference import compile_reference
from fhir_server.search.string import compile_string
from fhir_server.search.token import compile_token
from fhir_server.search.uri import compile_uri


def compile_criterion(resource_type: str, name: str, value: str, base_url: str = "") -> Clause:
    """Compile `name=value` for `resource_type`; AccessError MB-1016 names what is wrong."""
    if name.startswith("_has:"):
        return _has(name, value)
    head, _, chain = name.partition(".")
    code, _, modifier = head.partition(":")
    parameter = parameters_for(resource_type).get(code)
    if parameter is None:
        raise invalid(name, f"unknown search parameter for {resource_type}")
    if modifier == "missing":
        if value not in ("true", "false"):
            raise invalid(name, "expects true or false")
        presence = ranged("k", prefix_range(key(code, "")), cost=3)
        return Clause((presence,), negate=value == "true")
    if chain and parameter.type != "reference":
        raise invalid(name, "only reference parameters can be chained")
    if (len(value) - len(value.rstrip("\\"))) % 2:
        raise invalid(name, "ends with a lone '\\' (a literal backslash is written '\\\\')")
    values = split_values(value)
    kind = parameter.type
    if kind == "token":
        return compile_token(code, modifier, values)
    if kind == "string":
        return compile_string(code, modifier, values)
    if kind == "date":
        return compile_date(code, modifier, values)
    if kind == "reference":
        clause = compile_reference(parameter, modifier, values, base_url, chain)
        for alternative in clause.alternatives:
            if isinstance(alternative, ChainQuery):  # the chain's tail must be valid too
                for target in alternative.target_types:
                    compile_criterion(target, alternative.inner_name, alternative.value)
        return clause
    if kind == "number":
        return compile_number(code, modifier, values)
    if kind == "quantity":
        return compile_quantity(code, modifier, values)
    return compile_uri(code, modifier, values)


def split_values(value: str) -> list[str]:
    """Comma-separated alternatives; `\\,` is a literal comma."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in value:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _has(name: str, value: str) -> Clause:
    parts = name.split(":", 3)
    if len(parts) != 4 or not is_served(parts[1]):
        raise invalid(name, "expects _has:Type:reference-parameter:parameter")
    _, source_type, code, inner = parts
    parameter = parameters_for(source_type).get(code)
    if parameter is None or parameter.type != "reference":
        raise invalid(name, f"{source_type} has no reference parameter {code!r}")
    compile_criterion(source_type, inner, value)  # validate the inner criterion now
    return Clause((HasQuery(source_type, code, inner, value),))
