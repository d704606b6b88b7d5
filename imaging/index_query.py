"""One query over the DICOM index: a frozen description compiled once, with the access.

Search is data before it is a query. QIDO-RS, C-FIND, C-MOVE/C-GET and the WADO lookups
each describe what they want as an `IndexQuery`: the level whose rows are returned and,
per level, the `Condition`s its rows must meet (row field names: a level's own UID is
`_id`, a child row names its parents `st` / `se`). `compile_query(query, restriction)`
turns it and the access's `Restriction` into one `Compiled` plan: the filter of the
returned rows, the `Join`s that narrow it through other levels (looked up first, as a
`$in` of their UIDs) and sort / offset / limit. The restriction is part of the filter,
so paging, counts and truncation are computed over what the access may see.

A patient restriction is kept on the study rows (`patient`, the FHIR Patient id the
ImagingStudy upkeep wrote as the study's subject); series and instance rows reach it
through their study. A study the upkeep has not linked yet has no `patient`, so a
patient-restricted access does not see it (fail closed).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal

from access.restriction import Restriction
from imaging.index import DicomIndex

Document = dict[str, Any]
Level = Literal["study", "series", "instance"]
LEVELS: tuple[Level, ...] = ("study", "series", "instance")
# the field of a child row naming its parent of that level
PARENT_FIELD: dict[Level, str] = {"study": "st", "series": "se"}
PATIENT_FIELD = "patient"
SPLIT_IN_MAX = 64  # a `$in` up to this long runs as one equality query per value
ORDER = (("_id", 1),)
CHUNK_ROWS = 50  # rows per store request (see `chunked`)


@dataclass(frozen=True, slots=True)
class Condition:
    """One field of a level's row and its MongoDB condition (a value, `$in`, a range,
    a `$regex` from imaging.wildcard)."""

    field: str
    value: Any


@dataclass(frozen=True, slots=True)
class IndexQuery:
    """What one search asks for: rows of `level`, meeting each level's conditions.

    Conditions on a descendant level select the rows having such a descendant (a study
    with a CT series); on an ancestor, the rows whose ancestor meets them.
    """

    level: Level
    study: tuple[Condition, ...] = ()
    series: tuple[Condition, ...] = ()
    instance: tuple[Condition, ...] = ()
    offset: int = 0
    limit: int | None = None

    def conditions(self, level: Level) -> tuple[Condition, ...]:
        return {"study": self.study, "series": self.series, "instance": self.instance}[level]


@dataclass(frozen=True, slots=True)
class Join:
    """The returned rows' `field` must be one of the `value_field`s of the `level` rows
    matching `where` (looked up before the rows are read)."""

    field: str
    level: Level
    value_field: str
    where: Document


@dataclass(frozen=True, slots=True)
class Compiled:
    level: Level
    filter: Document
    joins: tuple[Join, ...] = ()
    sort: tuple[tuple[str, int], ...] = ORDER
    offset: int = 0
    limit: int | None = None
    nothing: bool = False  # the access may see none of it: no query is run


def _depth(level: Level) -> int:
    return LEVELS.index(level)


def both(existing: Any, allowed: list[Any]) -> Any:
    """A UID condition (a value or a `$in`) and "one of `allowed`" as one condition."""
    if existing is None:
        return {"$in": allowed}
    wanted = set(allowed)
    if isinstance(existing, str):
        return existing if existing in wanted else {"$in": []}
    return {"$in": [value for value in existing["$in"] if value in wanted]}


def _is_uids(condition: Any) -> bool:
    return isinstance(condition, str) or (isinstance(condition, dict) and set(condition) == {"$in"})


def _as_list(condition: Any) -> list[Any]:
    return [condition] if isinstance(condition, str) else list(condition["$in"])


def _filter(conditions: tuple[Condition, ...]) -> Document:
    where: Document = {}
    for condition in conditions:
        _and(where, condition.field, condition.value)
    return where


def _and(where: Document, field: str, value: Any) -> None:
    """AND `field: value` into `where`: UID-like conditions intersect, others stack."""
    if field not in where:
        where[field] = value
    elif _is_uids(where[field]) and _is_uids(value):
        # a single value stays an equality: the store uses the index for it, not a scan
        if isinstance(value, str):
            where[field] = both(value, _as_list(where[field]))
        else:
            where[field] = both(where[field], _as_list(value))
    else:
        where.setdefault("$and", []).append({field: value})


def compile_query(query: IndexQuery, restriction: Restriction) -> Compiled:
    """The query and what the access may see as one plan (no I/O)."""
    level = query.level
    if restriction.nothing:
        return Compiled(level, {}, nothing=True, offset=query.offset, limit=query.limit)
    own = _filter(query.conditions(level))
    ancestors: dict[Level, Document] = {
        parent: _filter(query.conditions(parent))
        for parent in LEVELS[: _depth(level)]
        if query.conditions(parent)
    }
    # the restriction: studies on the row itself (its _id or st), patients on the study
    if restriction.studies is not None:
        _and(own, "_id" if level == "study" else "st", {"$in": sorted(restriction.studies)})
    if restriction.patients is not None:
        allowed = {"$in": sorted(restriction.patients)}
        if level == "study":
            _and(own, PATIENT_FIELD, allowed)
        else:
            _and(ancestors.setdefault("study", {}), PATIENT_FIELD, allowed)
    joins: list[Join] = []
    for parent, where in ancestors.items():
        # a parent's own UID is on the row already: no lookup for it
        uid = where.pop("_id", None)
        if uid is not None:
            _and(own, PARENT_FIELD[parent], uid)
        if where:
            joins.append(Join(PARENT_FIELD[parent], parent, "_id", where))
    for child in LEVELS[_depth(level) + 1 :]:
        conditions = query.conditions(child)
        if conditions:
            joins.append(Join("_id", child, PARENT_FIELD[level], _filter(conditions)))
    return Compiled(level, own, tuple(joins), offset=query.offset, limit=query.limit)


def collection(index: DicomIndex, level: Level) -> Any:
    return {"study": index.studies, "series": index.series, "instance": index.instances}[level]


async def resolve(index: DicomIndex, compiled: Compiled) -> Document | None:
    """The filter of the returned rows with every join looked up; None when nothing can
    match (the embedded store would scan everything for an empty `$in`)."""
    if compiled.nothing:
        return None
    where = {key: list(value) if key == "$and" else value for key, value in compiled.filter.items()}
    for join in compiled.joins:
        found = await values(collection(index, join.level), join.value_field, join.where)
        _and(where, join.field, {"$in": found})
        if _empty(where.get(join.field)):
            return None
    if any(_empty(value) for value in where.values()):
        return None
    return where


def _empty(condition: Any) -> bool:
    return isinstance(condition, dict) and set(condition) == {"$in"} and not condition["$in"]


async def values(rows: Any, field_name: str, where: Document) -> list[Any]:
    """The distinct values of one field (the embedded store cannot `distinct` on `_id`)."""
    seen: dict[Any, None] = {}
    async for row in rows.find(where, {field_name: 1}):
        if field_name in row:
            seen[row[field_name]] = None
    return list(seen)


async def find_rows(
    index: DicomIndex,
    compiled: Compiled,
    projection: Document | None,
    extra: int = 0,
    split: str | None = None,
) -> list[Document]:
    """The rows the plan selects, sorted, paged (`extra` rows past the limit tell the
    caller whether more matched). `split`: a field whose short `$in` runs as one
    equality query per value (the embedded store scans the collection for `$in`)."""
    where = await resolve(index, compiled)
    if where is None:
        return []
    rows = collection(index, compiled.level)
    limit = None if compiled.limit is None else compiled.limit + extra
    if split is not None and not compiled.offset:
        return await split_in(rows, where, split, projection, limit)
    return await chunked(rows, where, projection, compiled.sort, compiled.offset, limit)


async def chunked(
    rows: Any,
    where: Document,
    projection: Document | None,
    sort: tuple[tuple[str, int], ...],
    offset: int,
    limit: int | None,
) -> list[Document]:
    """The rows in store requests of at most `CHUNK_ROWS`: the embedded store reads and
    encodes a whole find before answering anyone else, so 1,000 rows in one request held
    every other door's query for 40-100 ms; in chunks of 50 the others wait a few ms.
    Each chunk is one store request (~1 ms of the store's CPU of its own) and, since the
    store picks a page's rows by id before it reads their JSON (medbridge/embedded_store.py
    `page_by_ids`), no longer a sort of every matching row's JSON: 50 rows cost a
    1,031-instance QIDO page ~1.35x the store CPU of 100 and took an HL7 ACK's p99 beside
    it from 3.5-5.0x its quiet one to 2.4-3.4x; 25 rows cost 2x (docs/limits.md, L10).
    The sort ends in `_id` (unique), so the chunks' boundaries are stable; a row inserted
    before a boundary between two chunks is read twice and kept once."""
    found: list[Document] = []
    seen: set[Any] = set()
    position = offset
    while limit is None or len(found) < limit:
        wanted = CHUNK_ROWS if limit is None else min(CHUNK_ROWS, limit - len(found))
        cursor = rows.find(where, projection).sort(list(sort)).skip(position).limit(wanted)
        cursor = cursor.batch_size(wanted)  # one reply, not a first batch and a getMore
        chunk = await cursor.to_list()
        position += len(chunk)
        for row in chunk:
            if row["_id"] not in seen:
                seen.add(row["_id"])
                found.append(row)
        if len(chunk) < wanted:
            break
    return found


async def by_ids(
    rows: Any, ids: list[Any], projection: Document | None = None
) -> dict[Any, Document]:
    """The rows of `ids` by `_id`, at most `CHUNK_ROWS` per store request (an instance
    QIDO page may name 1,000 series)."""
    found: dict[Any, Document] = {}
    for start in range(0, len(ids), CHUNK_ROWS):
        part = ids[start : start + CHUNK_ROWS]
        cursor = rows.find({"_id": {"$in": part}}, projection).batch_size(len(part))
        for row in await cursor.to_list():
            found[row["_id"]] = row
    return found


async def split_in(
    rows: Any,
    where: Document,
    field_name: str,
    projection: Document | None,
    limit: int | None = None,
) -> list[Document]:
    """Rows sorted by `_id`; a short `$in` on `field_name` runs as one equality query per
    value, because the embedded store scans the collection for `$in` on that index."""
    condition = where.get(field_name)
    values_in = condition.get("$in") if isinstance(condition, dict) else None
    if values_in is None or len(values_in) > SPLIT_IN_MAX:
        return await _all(rows.find(where, projection).sort("_id", 1), limit)
    parts = await asyncio.gather(
        *(_all(rows.find({**where, field_name: value}, projection), limit) for value in values_in)
    )
    found = sorted((row for part in parts for row in part), key=lambda row: str(row["_id"]))
    return found if limit is None else found[:limit]


async def _all(cursor: Any, limit: int | None) -> list[Document]:
    if limit is not None:
        cursor = cursor.limit(limit)
    return [row async for row in cursor]


__all__ = [
    "Compiled",
    "Condition",
    "IndexQuery",
    "Join",
    "by_ids",
    "chunked",
    "compile_query",
    "find_rows",
    "resolve",
    "split_in",
    "values",
]
