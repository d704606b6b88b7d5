"""Index values extracted from a resource at write time, one row per value.

Rows are scalar on purpose: the embedded MongoDB-wire store indexes a field with a
SQLite expression index, which cannot match elements of an array, so multi-valued
parameters become several rows of a per-type index collection instead of one array.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from typing import Any

from fhir_server.search.parameters import SearchParameter, parameters_for

Row = dict[str, Any]


def index_rows(resource: dict[str, Any]) -> list[Row]:
    """Every index row of `resource` (without the resource id, which the store adds)."""
    resource_type = resource["resourceType"]
    rows: list[Row] = [{"p": "_id", "v": resource.get("id", "")}]
    for parameter in parameters_for(resource_type).values():
        for value in _evaluate(parameter, resource):
            rows.extend(_rows_for(parameter, value))
    return rows


def fold(text: str) -> str:
    """Lower case without accents: 'Šimkus' -> 'simkus', 'Ёлкин' -> 'елкин'."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _evaluate(parameter: SearchParameter, resource: dict[str, Any]) -> Iterator[Any]:
    resource_type = resource["resourceType"]
    for branch in parameter.expression.split("|"):
        path = branch.strip()
        if not path.startswith(resource_type + "."):
            continue
        path = path[len(resource_type) + 1 :]
        wanted_type = None
        if ".where(resolve() is " in path:
            path, _, rest = path.partition(".where(resolve() is ")
            wanted_type = rest.rstrip(")")
        for value in _walk(resource, path.split(".")):
            if wanted_type and not str(value.get("reference", "")).startswith(wanted_type + "/"):
                continue
            yield value


def _walk(node: Any, steps: list[str]) -> Iterator[Any]:
    if not steps:
        if isinstance(node, list):
            yield from node
        else:
            yield node
        return
    if isinstance(node, list):
        for item in node:
            yield from _walk(item, steps)
        return
    if isinstance(node, dict) and steps[0] in node:
        yield from _walk(node[steps[0]], steps[1:])


def _rows_for(parameter: SearchParameter, value: Any) -> Iterator[Row]:
    code = parameter.code
    if parameter.type == "token":
        if isinstance(value, dict):
            if "value" in value or "system" in value:
                yield {"p": code, "s": value.get("system", ""), "v": value.get("value", "")}
            for coding in value.get("coding", []):
                yield {"p": code, "s": coding.get("system", ""), "v": coding.get("code", "")}
        elif isinstance(value, str | bool):
            yield {
                "p": code,
                "s": "",
                "v": str(value).lower() if isinstance(value, bool) else value,
            }
    elif parameter.type == "string":
        for text in _strings(value):
            yield {"p": code, "v": fold(text), "x": text}
    elif parameter.type == "reference" and isinstance(value, dict) and "reference" in value:
        yield {"p": code, "v": value["reference"]}
    elif parameter.type == "date" and isinstance(value, str):
        yield {"p": code, "v": value}


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key in ("text", "family", "given", "prefix", "suffix"):
            part = value.get(key)
            if isinstance(part, str):
                yield part
            elif isinstance(part, list):
                yield from (p for p in part if isinstance(p, str))
