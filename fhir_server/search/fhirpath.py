"""The FHIRPath subset used by the R4 search-parameter expressions, over resource JSON.

Supported: member paths with choice types (`Observation.value` finds `valueQuantity`),
`(path as Type)`, `.as(Type)`, `.ofType(Type)`, `.where(resolve() is Type)`,
`.where(field='literal')`, `.exists()` and the `x.exists() and x != false` of
Patient-deceased. Anything else yields no values, so an
expression this subset cannot read indexes nothing rather than something wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

_AS = re.compile(r"\((?P<path>[^()]+) as (?P<type>\w+)\)(?P<rest>.*)")
_CALL = re.compile(r"(?P<name>\w+)\((?P<argument>.*)\)")
_RESOLVE_IS = re.compile(r"resolve\(\) is (\w+)")
_FIELD_IS = re.compile(r"(\w+)\s*=\s*'([^']*)'")
# R4's Patient-deceased: `Patient.deceased.exists() and Patient.deceased != false`
_PRESENT_NOT_FALSE = re.compile(r"(?P<path>[\w.]+)\.exists\(\) and (?P=path) != false")


@dataclass(frozen=True, slots=True)
class Node:
    """A value reached by a path, with the FHIR type its choice-element name revealed."""

    value: Any
    type: str | None = None


def evaluate(expression: str, resource: dict[str, Any]) -> list[Node]:
    """The values `expression` (one union branch) selects in `resource`."""
    expression = expression.strip()
    present = _PRESENT_NOT_FALSE.fullmatch(expression)
    if present:
        values = [n.value for n in _run(_steps(present["path"])[1:], [Node(resource)])]
        return [Node(bool(values) and values != [False], "boolean")]
    if " and " in expression or " or " in expression:
        return []
    cast = _AS.fullmatch(expression)
    if cast:
        nodes = _run(_steps(cast["path"])[1:], [Node(resource)])
        nodes = _of_type(nodes, cast["type"])
        rest = cast["rest"].lstrip(".")
        return _run(_steps(rest), nodes) if rest else nodes
    return _run(_steps(expression)[1:], [Node(resource)])


@cache
def _steps(path: str) -> list[str]:
    """`a.b.where(x='1').c` -> ["a", "b", "where(x='1')", "c"] (dots inside calls kept)."""
    steps: list[str] = []
    depth, start = 0, 0
    for index, char in enumerate(path):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "." and depth == 0:
            steps.append(path[start:index])
            start = index + 1
    steps.append(path[start:])
    return [step.strip() for step in steps if step.strip()]


def _run(steps: list[str], nodes: list[Node]) -> list[Node]:
    for step in steps:
        call = _CALL.fullmatch(step)
        if call is None:
            nodes = [child for node in nodes for child in _member(node, step)]
            continue
        name, argument = call["name"], call["argument"].strip()
        if name in ("as", "ofType"):
            nodes = _of_type(nodes, argument)
        elif name == "where":
            nodes = _where(nodes, argument)
        elif name == "exists":
            nodes = [Node(bool(nodes), "boolean")]
        else:
            return []
    return nodes


def _member(node: Node, name: str) -> Iterator[Node]:
    value = node.value
    if not isinstance(value, dict):
        return
    if name in value:
        yield from _flatten(value[name], None)
        return
    # a choice element: `value` is stored as valueQuantity, valueString ...
    for key, child in value.items():
        if key.startswith(name) and len(key) > len(name) and key[len(name)].isupper():
            yield from _flatten(child, key[len(name) :])


def _flatten(value: Any, type_name: str | None) -> Iterator[Node]:
    if isinstance(value, list):
        for item in value:
            yield Node(item, type_name)
    elif value is not None:
        yield Node(value, type_name)


def _of_type(nodes: list[Node], type_name: str) -> list[Node]:
    wanted = type_name[:1].upper() + type_name[1:]
    return [node for node in nodes if node.type is None or node.type == wanted]


def _where(nodes: list[Node], argument: str) -> list[Node]:
    resolve = _RESOLVE_IS.fullmatch(argument)
    if resolve:
        wanted = resolve.group(1)
        return [node for node in nodes if _reference_type(node.value) == wanted]
    field = _FIELD_IS.fullmatch(argument)
    if field:
        key, literal = field.groups()
        return [n for n in nodes if isinstance(n.value, dict) and n.value.get(key) == literal]
    return []


def _reference_type(value: Any) -> str | None:
    """The resource type a Reference points at: from `reference`, else from `type`."""
    if not isinstance(value, dict):
        return None
    reference = value.get("reference")
    if isinstance(reference, str) and "/" in reference:
        parts = reference.split("/")
        if "_history" in parts:
            parts = parts[: parts.index("_history")]
        if len(parts) >= 2:
            return parts[-2]
    declared = value.get("type")
    return declared if isinstance(declared, str) else None
