"""Index values extracted from a resource at write time, one row per value.

Rows are scalar on purpose: the embedded MongoDB-wire store indexes a field with a
SQLite expression index, which cannot match elements of an array, so multi-valued
parameters become several rows of a per-type index collection instead of one array.
Key spelling is in keys.py; the first value of each parameter is also kept as the
resource's sort key for `_sort`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from fhir_server.search.dates import date_range
from fhir_server.search.fhirpath import Node, Path, compile_path, element_names, top_element
from fhir_server.search.keys import (
    OPEN_END,
    SEP,
    decimal,
    fold,
    instant_key,
    key,
    number_key,
)
from fhir_server.search.parameters import SearchParameter, parameters_for

Row = dict[str, Any]

__all__ = ["Index", "Row", "fold", "index_entries", "index_rows", "reference_key"]


@dataclass(slots=True)
class Index:
    rows: list[Row] = field(default_factory=list)
    order: dict[str, str] = field(default_factory=dict)  # sort key per parameter code


def index_rows(resource: dict[str, Any]) -> list[Row]:
    """Every index row of `resource` (without the resource id, which the store adds)."""
    return index_entries(resource).rows


def index_entries(resource: dict[str, Any]) -> Index:
    """Rows and sort keys of `resource`."""
    index = Index()
    # about half the expressions of a type start from an element the resource lacks
    present = element_names(resource)
    for parameter, branches, own in _extractors(resource["resourceType"]):
        rows: list[Row] = []
        for path, element in branches:
            if element is not None and element not in present:
                continue
            for node in path(resource):
                rows.extend(_rows_for(parameter, node))
        for row in rows:
            order = row.pop("o", None)
            if parameter.code not in index.order and row["k"].startswith(own):
                index.order[parameter.code] = order or row["k"][len(own) :]
        index.rows.extend(rows)
    return index


Branch = tuple[Path, str | None]  # compiled expression, the element it starts from


@cache
def _extractors(resource_type: str) -> list[tuple[SearchParameter, list[Branch], str]]:
    """Per parameter of the type: its compiled branches and its own key prefix."""
    return [
        (
            parameter,
            [(compile_path(branch), top_element(branch)) for branch in parameter.branches],
            parameter.code + SEP,
        )
        for parameter in parameters_for(resource_type).values()
    ]


def _rows_for(parameter: SearchParameter, node: Node) -> Iterator[Row]:
    code, value = parameter.code, node.value
    kind = parameter.type
    if kind == "token":
        yield from _token(code, value)
    elif kind == "string":
        for text in _strings(value):
            folded = fold(text)
            yield {"k": key(code, folded), "c": key(code, text)}
    elif kind == "date":
        yield from _date(code, value)
    elif kind == "reference":
        yield from _reference(code, value)
    elif kind == "uri" and isinstance(value, str):
        yield {"k": key(code, value)}
    elif kind == "number":
        number = decimal(value)
        if number is not None:
            yield {"k": key(code, number_key(number))}
    elif kind == "quantity" and isinstance(value, dict):
        number = decimal(value.get("value"))
        if number is not None:
            yield {
                "k": key(code, number_key(number)),
                "s": value.get("system", ""),
                "u": value.get("code", ""),
                "n": value.get("unit", ""),
            }


def _token(code: str, value: Any) -> Iterator[Row]:
    if isinstance(value, bool):
        text = "true" if value else "false"
        yield {"k": key(code, "", text), "c": key(code, text), "o": text}
    elif isinstance(value, str):
        yield {"k": key(code, "", value), "c": key(code, value), "o": value}
    elif isinstance(value, dict):
        pairs: list[tuple[str, str]] = []
        texts: list[str] = []
        if "coding" in value or "text" in value:  # CodeableConcept
            for coding in value.get("coding", []):
                pairs.append((coding.get("system", ""), coding.get("code", "")))
                texts.append(coding.get("display", ""))
            texts.append(value.get("text", ""))
        elif "code" in value:  # Coding
            pairs.append((value.get("system", ""), value.get("code", "")))
            texts.append(value.get("display", ""))
        elif "value" in value:  # Identifier, ContactPoint
            pairs.append((value.get("system", ""), str(value["value"])))
            yield from _of_type(code, value)
        for system, token in pairs:
            if token or system:
                yield {"k": key(code, system, token), "c": key(code, token), "o": token}
        for text in texts:
            if text:
                yield {"k": key(f"{code}:text", fold(text))}


def _of_type(code: str, identifier: dict[str, Any]) -> Iterator[Row]:
    identifier_type = identifier.get("type")
    if not isinstance(identifier_type, dict):
        return
    for coding in identifier_type.get("coding", []):
        type_code = f"{coding.get('code', '')}|{identifier['value']}"
        yield {"k": key(f"{code}:of-type", coding.get("system", ""), type_code)}
    if identifier_type.get("text"):
        yield {"k": key(f"{code}:text", fold(identifier_type["text"]))}


def _date(code: str, value: Any) -> Iterator[Row]:
    low: str | None = None
    high: str | None = None
    if isinstance(value, str):
        bounds = date_range(value)
        if bounds:
            low, high = instant_key(bounds[0]), instant_key(bounds[1])
    elif isinstance(value, dict) and ("start" in value or "end" in value):  # Period
        start = date_range(value["start"]) if isinstance(value.get("start"), str) else None
        end = date_range(value["end"]) if isinstance(value.get("end"), str) else None
        low = instant_key(start[0]) if start else "0" * len(OPEN_END)
        high = instant_key(end[1]) if end else OPEN_END
    elif isinstance(value, dict) and isinstance(value.get("event"), list):  # Timing
        for event in value["event"]:
            yield from _date(code, event)
        return
    if low is not None and high is not None:
        yield {"k": key(code, low), "h": key(code, high)}


def reference_key(reference: str) -> tuple[str, str | None]:
    """`Patient/1/_history/2` -> ("Patient/1", "1"); absolute URLs stay whole."""
    parts = reference.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    whole = "/".join(parts)
    if "://" not in whole and len(parts) == 2:
        return whole, parts[1]
    return whole, None


def _reference(code: str, value: Any) -> Iterator[Row]:
    if isinstance(value, str):  # canonical
        yield {"k": key(code, value.split("|")[0])}
        return
    if not isinstance(value, dict):
        return
    reference = value.get("reference")
    if isinstance(reference, str) and not reference.startswith("#"):
        whole, resource_id = reference_key(reference)
        row: Row = {"k": key(code, whole)}
        if resource_id is not None:
            row["c"] = key(code, resource_id)
        yield row
    identifier = value.get("identifier")
    if isinstance(identifier, dict) and identifier.get("value"):
        system, token = identifier.get("system", ""), str(identifier["value"])
        yield {
            "k": key(f"{code}:identifier", system, token),
            "c": key(f"{code}:identifier", token),
        }


_NAME_PARTS = ("text", "family", "given", "prefix", "suffix")
_ADDRESS_PARTS = ("text", "line", "city", "district", "state", "postalCode", "country")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for part_name in (*_NAME_PARTS, *_ADDRESS_PARTS[1:]):
            part = value.get(part_name)
            if isinstance(part, str):
                yield part
            elif isinstance(part, list):
                yield from (p for p in part if isinstance(p, str))
