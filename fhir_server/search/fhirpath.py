"""The FHIRPath subset used by the R4 search-parameter expressions, over resource JSON.

Supported: member paths with choice types (`Observation.value` finds `valueQuantity`),
`(path as Type)`, `.as(Type)`, `.ofType(Type)`, `.where(resolve() is Type)`,
`.where(field='literal')`, `.exists()` and the `x.exists() and x != false` of
Patient-deceased. Anything else yields no values, so an
expression this subset cannot read indexes nothing rather than something wrong.
"""

from __future__ import annotations

import re
from collections.abc import Callable
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


Path = Callable[[dict[str, Any]], list[Node]]
Step = Callable[[list[Node]], list[Node]]


def evaluate(expression: str, resource: dict[str, Any]) -> list[Node]:
    """The values `expression` (one union branch) selects in `resource`."""
    return compile_path(expression)(resource)


@cache
def compile_path(expression: str) -> Path:
    """`expression` (one union branch) as a function of the resource.

    Every write evaluates each of a type's ~30 search expressions, so the text is
    read once per expression and the regular expressions stay off the write path.
    """
    expression = expression.strip()
    present = _PRESENT_NOT_FALSE.fullmatch(expression)
    if present:
        steps = _compile_steps(_steps(present["path"])[1:])

        def present_not_false(resource: dict[str, Any]) -> list[Node]:
            values = [n.value for n in _run(steps, [Node(resource)])]
            return [Node(bool(values) and values != [False], "boolean")]

        return present_not_false
    if " and " in expression or " or " in expression:
        return _nothing
    cast = _AS.fullmatch(expression)
    if cast:
        rest = cast["rest"].lstrip(".")
        steps = (
            _compile_steps(_steps(cast["path"])[1:])
            + [_of_type_step(cast["type"])]
            + (_compile_steps(_steps(rest)) if rest else [])
        )
    else:
        steps = _compile_steps(_steps(expression)[1:])
    return lambda resource: _run(steps, [Node(resource)])


@cache
def top_element(expression: str) -> str | None:
    """The element of the resource `expression` starts from, when its absence means the
    expression selects nothing; None when that cannot be told (`exists()` is false
    rather than empty, a path that starts with a function)."""
    expression = expression.strip()
    if "exists()" in expression:
        return None
    cast = _AS.fullmatch(expression)
    steps = _steps(cast["path"] if cast else expression)
    if len(steps) < 2 or _CALL.fullmatch(steps[1]):
        return None
    return steps[1]


def element_names(resource: dict[str, Any]) -> set[str]:
    """Every name a member step finds at the top of `resource`: its element names and
    the choice-element names inside them (`valueQuantity` -> `value`)."""
    names = set(resource)
    for key in resource:
        names.update(key[:index] for index in range(1, len(key)) if key[index].isupper())
    return names


def _nothing(resource: dict[str, Any]) -> list[Node]:
    return []


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


def _compile_steps(steps: list[str]) -> list[Step]:
    compiled: list[Step] = []
    for step in steps:
        call = _CALL.fullmatch(step)
        if call is None:
            compiled.append(_member_step(step))
            continue
        name, argument = call["name"], call["argument"].strip()
        if name in ("as", "ofType"):
            compiled.append(_of_type_step(argument))
        elif name == "where":
            compiled.append(_where_step(argument))
        elif name == "exists":
            compiled.append(lambda nodes: [Node(bool(nodes), "boolean")])
        else:
            return [lambda nodes: []]  # a function outside the subset: no values at all
    return compiled


def _run(steps: list[Step], nodes: list[Node]) -> list[Node]:
    for step in steps:
        nodes = step(nodes)
    return nodes


def _member_step(name: str) -> Step:
    def member(nodes: list[Node]) -> list[Node]:
        children: list[Node] = []
        for node in nodes:
            if isinstance(node.value, dict):
                _member(node.value, name, children)
        return children

    return member


def _of_type_step(type_name: str) -> Step:
    return lambda nodes: _of_type(nodes, type_name)


def _member(value: dict[str, Any], name: str, children: list[Node]) -> None:
    if name in value:
        _flatten(value[name], None, children)
        return
    # a choice element: `value` is stored as valueQuantity, valueString ...
    size = len(name)
    for key, child in value.items():
        if key.startswith(name) and len(key) > size and key[size].isupper():
            _flatten(child, key[size:], children)


def _flatten(value: Any, type_name: str | None, children: list[Node]) -> None:
    if isinstance(value, list):
        children.extend(Node(item, type_name) for item in value)
    elif value is not None:
        children.append(Node(value, type_name))


def _of_type(nodes: list[Node], type_name: str) -> list[Node]:
    wanted = type_name[:1].upper() + type_name[1:]
    return [node for node in nodes if node.type is None or node.type == wanted]


def _where_step(argument: str) -> Step:
    resolve = _RESOLVE_IS.fullmatch(argument)
    if resolve:
        wanted = resolve.group(1)
        return lambda nodes: [node for node in nodes if _reference_type(node.value) == wanted]
    field = _FIELD_IS.fullmatch(argument)
    if field:
        key, literal = field.groups()
        return lambda nodes: [
            n for n in nodes if isinstance(n.value, dict) and n.value.get(key) == literal
        ]
    return lambda nodes: []


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
