"""The small composable nodes a search compiles to, before any I/O.

A `Clause` is one AND-ed criterion: a resource matches when any alternative matches
(comma = OR), or, negated, when none does. Each alternative is one indexed query over
the type's index collection (`RowQuery`), or a search on another type whose result
feeds this one (`ChainQuery` for `subject.name=`, `HasQuery` for `_has:`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from access.errors import AccessError


@dataclass(frozen=True, slots=True)
class RowQuery:
    """One find() over `<Type>_idx`; `filter` names single-field-indexed keys only."""

    filter: tuple[tuple[str, Any], ...]
    cost: int = 2  # 0 exact key, 1 alternate key, 2 prefix, 3 range

    def as_filter(self) -> dict[str, Any]:
        return dict(self.filter)


@dataclass(frozen=True, slots=True)
class ChainQuery:
    """Resources whose `code` references one found by `inner` (a search on a target type)."""

    code: str
    target_types: tuple[str, ...]
    inner_name: str  # the rest of the chain: "identifier", "name", "organization.name"
    value: str


@dataclass(frozen=True, slots=True)
class HasQuery:
    """Resources referenced through `code` by `source_type` resources matching `inner`."""

    source_type: str
    code: str
    inner_name: str
    value: str


Alternative = RowQuery | ChainQuery | HasQuery


@dataclass(frozen=True, slots=True)
class Clause:
    alternatives: tuple[Alternative, ...]
    negate: bool = False

    @property
    def cost(self) -> int:
        if self.negate:
            return 9
        return max((a.cost if isinstance(a, RowQuery) else 1 for a in self.alternatives), default=0)


def invalid(name: str, message: str) -> AccessError:
    return AccessError("MB-1016", f"{name}: {message}", expression=name)


def exact(field: str, value: str, cost: int = 0) -> RowQuery:
    return RowQuery(((field, value),), cost)


def ranged(field: str, bounds: dict[str, str], cost: int = 3) -> RowQuery:
    return RowQuery(((field, bounds),), cost)
