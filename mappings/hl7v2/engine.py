"""The small engine that applies a field table (segments.yaml) to a group of segments.

A row names its source fields (first non-empty wins: `[ORC-2, OBR-2]`, components as
`ORC-7.6`), the FHIR element (dotted path), the HL7 data type or a code table, and
whether the element repeats. Everything else about a message type lives in translate.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from mappings.hl7v2.datatypes import CONVERTERS, V2_0203, Context, Element
from mappings.hl7v2.errors import MappingError
from mappings.hl7v2.message import Repetition, Segment, component_of
from mappings.hl7v2.tolerance import tolerated

# elements of cardinality 1..1 in the resources mapped here: HL7 `""` cannot remove them
FHIR_REQUIRED = frozenset({"status", "code", "intent", "subject", "class"})


@dataclass(frozen=True, slots=True)
class Source:
    segment: str
    field: int
    component: int | None


@dataclass(frozen=True, slots=True)
class Row:
    sources: tuple[Source, ...]
    element: str
    datatype: str | None
    table: str | None
    coding: str | None  # wrap a table code as CodeableConcept with this system
    identifier_type: str | None  # v2-0203 code put on an Identifier (PLAC, FILL, ACSN)
    wrap: str | None  # put the value under this key: referenceRange [{text: ...}]
    system: str | None  # make the value an Identifier of this system (an AE title)
    prefix: str
    repeat: bool
    required: bool


def _source(text: str) -> Source:
    segment, _, position = text.partition("-")
    field, _, component = position.partition(".")
    return Source(segment, int(field), int(component) if component else None)


@cache
def table(name: str) -> tuple[Row, ...]:
    """The rows for one FHIR resource type from segments.yaml."""
    text = (resources.files("mappings.hl7v2") / "tables" / "segments.yaml").read_text("utf-8")
    rows: list[dict[str, Any]] = yaml.safe_load(text)[name]
    return tuple(
        Row(
            sources=tuple(_source(s) for s in _as_list(row["field"])),
            element=row["element"],
            datatype=row.get("datatype"),
            table=row.get("table"),
            coding=row.get("coding"),
            identifier_type=row.get("identifier_type"),
            wrap=row.get("wrap"),
            system=row.get("system"),
            prefix=row.get("prefix", ""),
            repeat=bool(row.get("repeat", False)),
            required=bool(row.get("required", False)),
        )
        for row in rows
    )


def build(resource_type: str, segments: Mapping[str, Segment], context: Context) -> Element:
    """Apply the table of `resource_type` to the segments of one group (name -> segment).

    An element whose field is HL7's explicit null `""` (and that nothing else sets) is
    None: the writer removes it from the stored resource.
    """
    resource: Element = {"resourceType": resource_type}
    cleared: list[str] = []
    for row in table(resource_type):
        values = _values(row, segments, context)
        if not values:
            if _nulled(row, segments) and not row.required:
                cleared.append(row.element)
            elif row.required:
                first = row.sources[0]
                segment = segments.get(first.segment)
                index = segment.index if segment else 1
                raise MappingError(
                    "101",
                    f"{first.segment}-{first.field} is required",
                    f"{first.segment}^{index}^{first.field}",
                )
            continue
        _put(resource, row.element, values if row.repeat else values[0], row.repeat)
    for path in cleared:
        _clear(resource, path)
    return resource


def _nulled(row: Row, segments: Mapping[str, Segment]) -> bool:
    first = next((s for s in row.sources if s.segment in segments), None)
    if first is None or first.component is not None:
        return False
    return segments[first.segment].nulled(first.field)


def _clear(resource: Element, path: str) -> None:
    # a part of an element (class.code) is not cleared alone, nor an element FHIR requires
    if "." not in path and path not in FHIR_REQUIRED:
        resource.setdefault(path, None)


def _values(row: Row, segments: Mapping[str, Segment], context: Context) -> list[Any]:
    for source in row.sources:
        segment = segments.get(source.segment)
        if segment is None:
            continue
        repetitions = segment.field(source.field)
        if source.component is not None:
            repetitions = [
                [rep[source.component - 1]]
                for rep in repetitions
                if len(rep) >= source.component and any(rep[source.component - 1])
            ]
        context.location = f"{segment.name}^{segment.index}^{source.field}"
        converted = (_tolerant(row, source, rep, context) for rep in repetitions)
        values = [v for v in converted if v is not None]
        if values:
            return values if row.repeat else values[:1]
    return []


def _tolerant(row: Row, source: Source, rep: Repetition, context: Context) -> Any:
    """The converted value; a data-type error outside the key fields drops just this value
    and is kept as a warning (AA with ERR severity W)."""
    try:
        return _convert(row, rep, context)
    except MappingError as error:
        if error.code != "102" or not tolerated(source.segment, source.field):
            raise
        context.warnings.append(error)
        return None


def _convert(row: Row, rep: Repetition, context: Context) -> Any:
    if row.table:
        value: Any = context.tables.code(row.table, component_of(rep, 1))
        if value is not None and row.coding:
            value = {"coding": [{"system": row.coding, "code": value}]}
    elif row.datatype:
        value = CONVERTERS[row.datatype](rep, context)
    else:
        value = component_of(rep, 1) or None
    if value is None:
        return None
    if row.prefix and isinstance(value, str):
        value = row.prefix + value
    if row.system and isinstance(value, str):
        value = {"system": row.system, "value": value}
    if row.identifier_type and isinstance(value, dict):
        value["type"] = {"coding": [{"system": V2_0203, "code": row.identifier_type}]}
    if row.wrap:
        value = {row.wrap: value}
    return value


def _put(resource: Element, path: str, value: Any, repeat: bool) -> None:
    *parents, last = path.split(".")
    node = resource
    for part in parents:
        node = node.setdefault(part, {})
    if repeat:
        node.setdefault(last, []).extend(value)
    else:
        node.setdefault(last, value)


def _as_list(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]
