"""A search's page: matches sorted and cut by keyset paging, then `_include`s.

Paging is by keyset, not offset: the `next` link carries the sort values of the last
entry, so writes by other clients between two pages neither repeat nor skip a
resource that was there when paging started. Sort values live in each current
document's `o` sub-document (one scalar per parameter, "" when absent).
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field
from typing import Any

import orjson

from access.errors import AccessError
from access.restriction import UNRESTRICTED, Restriction
from fhir_server.bodies import BODY
from fhir_server.registry import is_served
from fhir_server.search.engine import Engine
from fhir_server.search.keys import key
from fhir_server.search.nodes import Clause
from fhir_server.search.request import Include, SearchRequest
from fhir_server.search.restriction import visible_ids

Document = dict[str, Any]
MAX_ITERATE = 3
FOUND = {"raw": 1, "o": 1, BODY: 1}  # what a page reads of each match
READ_CHUNK = 1000  # ids per `_id: {$in}` query when every match is read


@dataclass(slots=True)
class Page:
    matches: list[Document] = field(default_factory=list)  # {_id, raw, o}
    included: list[tuple[str, Document]] = field(default_factory=list)
    total: int | None = None
    next_token: str | None = None
    previous_token: str | None = None
    # every id the search matched (restriction included); None when it had no clauses
    ids: set[str] | None = None


def sort_fields(request: SearchRequest) -> list[tuple[str, int]]:
    fields = [
        ("_id" if s.code == "_id" else f"o.{s.code}", -1 if s.descending else 1)
        for s in request.sort
    ]
    if not any(name == "_id" for name, _ in fields):
        fields.append(("_id", 1))
    return fields


async def run_page(
    engine: Engine,
    request: SearchRequest,
    clauses: list[Clause],
    want_entries: bool = True,
    restriction: Restriction = UNRESTRICTED,
) -> Page:
    """`clauses` already hold the restriction (the matches); `restriction` limits what
    `_include`/`_revinclude` add."""
    ids = await engine.ids(request.resource_type, clauses)
    page = Page(ids=ids)
    collection = engine.db[request.resource_type]
    base: Document = {"_id": {"$in": sorted(ids)}} if ids is not None else {"raw": {"$ne": None}}
    if request.total != "none" or request.summary == "count":
        page.total = len(ids) if ids is not None else await _count(engine, base, request)
    if not want_entries or request.count == 0 or (ids is not None and not ids):
        return page
    fields = sort_fields(request)
    direction, after = _decode(request.page, len(fields)) if request.page else ("n", None)
    order = fields if direction == "n" else [(name, -way) for name, way in fields]
    if ids is not None and len(fields) == 1:
        # ordered by id alone: the ids are in hand, so only the page's documents are read
        docs = await _by_id(engine, request, ids, order[0][1], after)
    else:
        query = dict(base)
        if after is not None:
            query["$or"] = _after(order, after)
        cursor = collection.find(query, FOUND, session=engine.session)
        docs = await cursor.sort(order).limit(request.count + 1).to_list()
    more = len(docs) > request.count
    docs = docs[: request.count]
    await engine.resolve(docs)
    if direction == "p":
        docs.reverse()
    page.matches = docs
    if docs:
        if (direction == "n" and more) or (direction == "p" and after is not None):
            page.next_token = _encode("n", _values(docs[-1], fields))
        if (direction == "n" and after is not None) or (direction == "p" and more):
            page.previous_token = _encode("p", _values(docs[0], fields))
    if request.includes:
        page.included = await _includes(engine, request, docs, restriction)
    return page


async def _count(engine: Engine, query: Document, request: SearchRequest) -> int:
    # $match + $count: count_documents() ($group) takes seconds on the embedded store
    pipeline: list[Document] = [{"$match": query}, {"$count": "n"}]
    cursor = await engine.db[request.resource_type].aggregate(pipeline, session=engine.session)
    counted = await cursor.to_list()
    return int(counted[0]["n"]) if counted else 0


async def _by_id(
    engine: Engine, request: SearchRequest, ids: set[str], way: int, after: list[str] | None
) -> list[Document]:
    ordered = sorted(ids, reverse=way == -1)
    if after is not None:
        ordered = [i for i in ordered if (i > after[0] if way == 1 else i < after[0])]
    chosen = ordered[: request.count + 1]
    cursor = engine.db[request.resource_type].find(
        {"_id": {"$in": chosen}}, FOUND, session=engine.session
    )
    found = {doc["_id"]: doc async for doc in cursor}
    return [found[i] for i in chosen if i in found and found[i].get("raw") is not None]


async def documents(engine: Engine, resource_type: str, ids: set[str]) -> list[Document]:
    """The current documents of `ids` (deleted ones left out), in id order: the matches
    of a search already run, read by primary key instead of matching them again."""
    ordered = sorted(ids)
    found: list[Document] = []
    for start in range(0, len(ordered), READ_CHUNK):
        chunk = ordered[start : start + READ_CHUNK]
        cursor = engine.db[resource_type].find(
            {"_id": {"$in": chunk}}, FOUND, session=engine.session
        )
        by_id = {doc["_id"]: doc async for doc in cursor}
        found.extend(by_id[i] for i in chunk if i in by_id and by_id[i].get("raw") is not None)
    await engine.resolve(found)
    return found


def _values(doc: Document, fields: list[tuple[str, int]]) -> list[str]:
    order = doc.get("o") or {}
    return [doc["_id"] if name == "_id" else order.get(name[2:], "") for name, _ in fields]


def _after(order: list[tuple[str, int]], values: list[str]) -> list[Document]:
    """Keyset condition: strictly after `values` in `order`."""
    alternatives: list[Document] = []
    for index, (name, way) in enumerate(order):
        condition: Document = {order[i][0]: values[i] for i in range(index)}
        condition[name] = {"$gt" if way == 1 else "$lt": values[index]}
        alternatives.append(condition)
    return alternatives


def _encode(direction: str, values: list[str]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([direction, *values])).decode().rstrip("=")


def _decode(token: str, width: int) -> tuple[str, list[str]]:
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, orjson.JSONDecodeError) as error:
        raise AccessError(
            "MB-1016", "_page is not a page of this search", expression="_page"
        ) from error
    if (
        not isinstance(decoded, list)
        or len(decoded) != width + 1
        or decoded[0] not in ("n", "p")
        or not all(isinstance(v, str) for v in decoded)
    ):
        raise AccessError("MB-1016", "_page is not a page of this search", expression="_page")
    return decoded[0], decoded[1:]


async def _includes(
    engine: Engine, request: SearchRequest, docs: list[Document], restriction: Restriction
) -> list[tuple[str, Document]]:
    seen = {f"{request.resource_type}/{doc['_id']}" for doc in docs}
    frontier = set(seen)
    included: list[tuple[str, Document]] = []
    for round_number in range(MAX_ITERATE + 1):
        wanted = [i for i in request.includes if round_number == 0 or i.iterate]
        if not wanted or not frontier:
            break
        found: set[str] = set()
        for include in wanted:
            found |= await _follow(engine, include, frontier)
        fresh = await _visible(engine, found - seen, restriction)
        seen |= fresh
        included.extend(await _fetch(engine, fresh))
        frontier = {f"{t}/{d['_id']}" for t, d in included if f"{t}/{d['_id']}" in fresh}
    return included


async def _visible(engine: Engine, references: set[str], restriction: Restriction) -> set[str]:
    """The `Type/id`s of `references` the access may see (an index query per type)."""
    if restriction.patients is None or not references:
        return references
    by_type: dict[str, set[str]] = {}
    for reference in references:
        resource_type, _, resource_id = reference.partition("/")
        by_type.setdefault(resource_type, set()).add(resource_id)
    kept: set[str] = set()
    for resource_type, ids in by_type.items():
        visible = await visible_ids(engine, resource_type, ids, restriction)
        kept |= {f"{resource_type}/{i}" for i in visible}
    return kept


async def _follow(engine: Engine, include: Include, frontier: set[str]) -> set[str]:
    if not include.reverse:
        sources = {
            r.split("/", 1)[1] for r in frontier if r.split("/", 1)[0] == include.source_type
        }
        if not sources:
            return set()
        target = f"{include.target_type}/" if include.target_type else ""
        found = await engine.references(include.source_type, sources, key(include.code, target))
        return {r for r in found if r.count("/") == 1 and is_served(r.split("/", 1)[0])}
    results = await asyncio.gather(
        *(
            engine.row_ids(include.source_type, {"k": key(include.code, r)})
            for r in sorted(frontier)
        )
    )
    return {f"{include.source_type}/{rid}" for ids in results for rid in ids}


async def _fetch(engine: Engine, references: set[str]) -> list[tuple[str, Document]]:
    by_type: dict[str, list[str]] = {}
    for reference in sorted(references):
        resource_type, _, resource_id = reference.partition("/")
        by_type.setdefault(resource_type, []).append(resource_id)
    fetched: list[tuple[str, Document]] = []
    for resource_type, ids in by_type.items():
        cursor = engine.db[resource_type].find(
            {"_id": {"$in": ids}}, {"raw": 1, BODY: 1}, session=engine.session
        )
        fetched.extend([(resource_type, doc) async for doc in cursor if doc.get("raw") is not None])
    await engine.resolve([doc for _, doc in fetched])
    return fetched
