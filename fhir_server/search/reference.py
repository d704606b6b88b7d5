"""reference parameters: id, Type/id, absolute URL, :Type, :identifier, and chains."""

from __future__ import annotations

from fhir_server.search.extract import reference_key
from fhir_server.search.keys import key
from fhir_server.search.nodes import Alternative, ChainQuery, Clause, exact, invalid
from fhir_server.search.parameters import SearchParameter


def compile_reference(
    parameter: SearchParameter, modifier: str, values: list[str], base_url: str, chain: str
) -> Clause:
    code = parameter.code
    if modifier and modifier not in ("identifier", "missing") and not modifier[:1].isupper():
        raise invalid(f"{code}:{modifier}", "modifier not supported on a reference parameter")
    targets = (modifier,) if modifier[:1].isupper() else parameter.target
    if chain:
        if not targets:
            raise invalid(code, "a chain needs a target type")
        if len(targets) > 1 and not modifier:
            raise invalid(code, f"several target types {targets}: say one, as {code}:Type.x")
        return Clause(tuple(ChainQuery(code, targets, chain, value) for value in values))
    alternatives: list[Alternative] = []
    for value in values:
        if not value:
            raise invalid(code, "empty reference")
        if modifier == "identifier":
            system, bar, token = value.rpartition("|")
            alternatives.append(
                exact("k", key(f"{code}:identifier", system, token))
                if bar
                else exact("c", key(f"{code}:identifier", token), cost=1)
            )
            continue
        text = value
        if base_url and text.startswith(base_url + "/"):
            text = text[len(base_url) + 1 :]
        whole, resource_id = reference_key(text)
        if resource_id is not None or "://" in whole:
            alternatives.append(exact("k", key(code, whole)))
        elif modifier[:1].isupper():
            alternatives.append(exact("k", key(code, f"{modifier}/{text}")))
        else:
            alternatives.append(exact("c", key(code, text), cost=1))
    return Clause(tuple(alternatives))
