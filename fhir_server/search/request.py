"""`parse_search(type, query) -> SearchRequest`: the query string as data, validated.

Unknown parameters are dropped (lenient, the default) and left out of `applied`, which
is what the `self` link shows; with `strict` the first one is a 400 OperationOutcome
naming it. A malformed value of a known parameter is a 400 in both modes: dropping it
would answer every resource to a client that asked for some. Each value is checked
against the request budget (`search/values.py`) before it is compiled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from access.budget import Budget
from access.errors import AccessError
from fhir_server.registry import is_served
from fhir_server.search.compile import compile_criterion
from fhir_server.search.parameters import parameters_for
from fhir_server.search.values import check_parameter

DEFAULT_COUNT = 20
MAX_COUNT = 1000
PASSIVE = frozenset({"_format", "_pretty"})
TOTALS = frozenset({"none", "estimate", "accurate"})
SUMMARIES = frozenset({"true", "false", "count", "data", "text"})


@dataclass(frozen=True, slots=True)
class SortKey:
    code: str
    descending: bool


@dataclass(frozen=True, slots=True)
class Include:
    source_type: str
    code: str
    target_type: str | None
    reverse: bool
    iterate: bool


@dataclass(frozen=True, slots=True)
class SearchRequest:
    resource_type: str
    criteria: tuple[tuple[str, str], ...] = ()
    sort: tuple[SortKey, ...] = ()
    count: int = DEFAULT_COUNT
    page: str | None = None
    total: str = "accurate"
    summary: str | None = None
    elements: tuple[str, ...] = ()
    includes: tuple[Include, ...] = ()
    applied: tuple[tuple[str, str], ...] = ()  # what the self link shows
    base_url: str = ""


_DEFAULT_BUDGET = Budget()


def parse_search(
    resource_type: str,
    query: list[tuple[str, str]],
    *,
    strict: bool = False,
    base_url: str = "",
    budget: Budget = _DEFAULT_BUDGET,
) -> SearchRequest:
    draft = _Draft(resource_type)
    for name, value in query:
        if name in PASSIVE:
            continue
        check_parameter(name, value, budget)
        try:
            is_control = name.startswith("_") and not name.startswith(_CRITERIA_PREFIXES)
            if not (is_control and draft.control(name, value)):
                compile_criterion(resource_type, name, value, base_url)
                draft.criteria.append((name, value))
        except AccessError as error:
            if not strict and is_unknown(resource_type, name):
                continue
            if error.expression == name:
                raise
            # name the parameter as the client wrote it, not the part that failed inside it
            raise AccessError(error.code, error.diagnostics, expression=name) from error
        if name != "_page":
            draft.applied.append((name, value))
    return SearchRequest(
        resource_type,
        tuple(draft.criteria),
        tuple(draft.sort),
        draft.count,
        draft.page,
        draft.total,
        draft.summary,
        draft.elements,
        tuple(draft.includes),
        tuple(draft.applied),
        base_url,
    )


_CRITERIA_PREFIXES = ("_has:", "_id", "_lastUpdated")
_CONTROLS = frozenset(
    {"_count", "_page", "_total", "_summary", "_elements", "_sort", "_include", "_revinclude"}
)


def is_unknown(resource_type: str, name: str) -> bool:
    """True when `name` is no parameter of `resource_type` (lenient handling ignores it)."""
    if name.startswith("_has:"):
        return False
    code = name.partition(".")[0].partition(":")[0]
    return code not in _CONTROLS and code not in parameters_for(resource_type)


@dataclass(slots=True)
class _Draft:
    """A SearchRequest while its parameters are read."""

    resource_type: str
    criteria: list[tuple[str, str]] = field(default_factory=list)
    sort: list[SortKey] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    page: str | None = None
    total: str = "accurate"
    summary: str | None = None
    elements: tuple[str, ...] = ()
    includes: list[Include] = field(default_factory=list)
    applied: list[tuple[str, str]] = field(default_factory=list)

    def control(self, name: str, value: str) -> bool:
        """Apply a result parameter; False when `name` is a search parameter like `_tag`."""
        base, _, modifier = name.partition(":")
        if base == "_count":
            if not value.isdigit():
                raise _bad(name, "must be a non-negative integer")
            self.count = min(int(value), MAX_COUNT)
        elif base == "_page":
            self.page = value
        elif base == "_total":
            if value not in TOTALS:
                raise _bad(name, f"must be one of {sorted(TOTALS)}")
            self.total = value
        elif base == "_summary":
            if value not in SUMMARIES:
                raise _bad(name, f"must be one of {sorted(SUMMARIES)}")
            self.summary = None if value == "false" else value
        elif base == "_elements":
            self.elements = tuple(e.strip() for e in value.split(",") if e.strip())
        elif base == "_sort":
            self.sort.extend(_sort_keys(name, value, self.resource_type))
        elif base in ("_include", "_revinclude"):
            if modifier not in ("", "iterate", "recurse"):
                raise _bad(name, f"modifier {modifier!r} not supported")
            self.includes.append(_include(name, value, base == "_revinclude", bool(modifier)))
        else:
            return False
        return True


def _sort_keys(name: str, value: str, resource_type: str) -> list[SortKey]:
    known = parameters_for(resource_type)
    keys: list[SortKey] = []
    for item in value.split(","):
        code = item.strip().removeprefix("-")
        if code not in known:
            raise _bad(name, f"cannot sort by {code!r}: not a parameter of {resource_type}")
        keys.append(SortKey(code, item.strip().startswith("-")))
    return keys


def _include(name: str, value: str, reverse: bool, iterate: bool) -> Include:
    parts = value.split(":")
    if len(parts) not in (2, 3) or not is_served(parts[0]):
        raise _bad(name, f"{value!r} is not SourceType:parameter[:TargetType]")
    source, code = parts[0], parts[1]
    parameter = parameters_for(source).get(code)
    if parameter is None or parameter.type != "reference":
        raise _bad(name, f"{source} has no reference parameter {code!r}")
    target = parts[2] if len(parts) == 3 else None
    if target is not None and not is_served(target):
        raise _bad(name, f"{target!r} is not a served type")
    return Include(source, code, target, reverse, iterate)


def _bad(name: str, message: str) -> AccessError:
    return AccessError("MB-1016", f"{name}: {message}", expression=name)
