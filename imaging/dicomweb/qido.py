"""QIDO-RS: search the study / series / instance index with PS3.18 matching.

Query parameters are parsed into `Match` nodes first, then compiled to MongoDB
filters per level; ModalitiesInStudy and the related-count attributes are computed.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydicom.datadict import keyword_for_tag

from access.budget import Budget
from access.errors import AccessError
from access.loop_turns import Turns
from access.restriction import UNRESTRICTED, Restriction
from imaging.dicomweb.dicom_json import attribute, dataset, tag_hex, vr_of
from imaging.index import DicomIndex
from imaging.index_query import (
    Condition,
    IndexQuery,
    Level,
    by_ids,
    compile_query,
    find_rows,
)
from imaging.parse import fold, qido_attributes
from imaging.uids import uid_list
from imaging.wildcard import compile_wildcard, has_wildcards

DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
MAX_WILDCARD_CHARS = Budget().max_wildcard_chars
# PS3.18 8.3.4.4.1: the answer is cut at the server's maximum, more can be asked for
TRUNCATED_WARNING = (
    '299 {service}: "The number of results exceeded the maximum supported by the server. '
    'Additional results can be requested."'
)
UID_KEYWORDS = {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"}
ID_FIELD = {"StudyInstanceUID": "_id", "SeriesInstanceUID": "_id", "SOPInstanceUID": "_id"}
PARENT_FIELD = {
    "series": {"StudyInstanceUID": "st"},
    "instance": {"StudyInstanceUID": "st", "SeriesInstanceUID": "se"},
}
FOLDED = {"PatientName": "_pn", "ReferringPhysicianName": "_rpn"}
Document = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Match:
    keyword: str
    value: str


@dataclass(slots=True)
class Query:
    level: str  # study | series | instance
    matches: list[Match] = field(default_factory=list)
    include: set[str] = field(default_factory=set)
    include_all: bool = False
    fuzzy: bool = False
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    # the limit was set by the server (none asked, or over MAX_LIMIT), not the client
    server_limited: bool = True
    max_wildcard_chars: int = MAX_WILDCARD_CHARS


@dataclass(frozen=True, slots=True)
class SearchResult:
    body: bytes
    truncated: bool  # more matches than the server's maximum: PS3.18 Warning 299

    def headers(self, service: str) -> dict[str, str]:
        return {"Warning": TRUNCATED_WARNING.format(service=service)} if self.truncated else {}


def _level_of(keyword: str) -> str | None:
    attrs = qido_attributes()
    if keyword == "ModalitiesInStudy":
        return "series"
    for level in ("study", "series", "instance"):
        if keyword in attrs[level]:
            return level
    return None


def _keyword(name: str) -> str:
    if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
        return str(keyword_for_tag(int(name, 16)) or name)
    return name


def parse_query(
    level: str,
    params: list[tuple[str, str]],
    fixed: dict[str, str],
    max_wildcard_chars: int = MAX_WILDCARD_CHARS,
) -> Query:
    query = Query(level, max_wildcard_chars=max_wildcard_chars)
    for name, value in params:
        if name == "includefield":
            for item in value.split(","):
                if item.strip() == "all":
                    query.include_all = True
                elif item.strip():
                    query.include.add(_keyword(item.strip()))
        elif name == "fuzzymatching":
            query.fuzzy = value.lower() == "true"
        elif name in ("limit", "offset"):
            if not value.isdigit():
                raise AccessError("MB-3011", f"{name} must be a non-negative integer")
            if name == "limit":
                # 0 or over the maximum: the server's maximum applies (PS3.18 8.3.4.4.1)
                query.limit = min(int(value), MAX_LIMIT) or MAX_LIMIT
                query.server_limited = not 0 < int(value) <= MAX_LIMIT
            else:
                query.offset = int(value)
        else:
            keyword = _keyword(name)
            if _level_of(keyword) is None:
                raise AccessError("MB-3011", f"{name[:64]!r} is not a supported matching key")
            query.matches.append(Match(keyword, value))
    query.matches.extend(Match(k, v) for k, v in fixed.items())
    return query


def condition(
    match: Match, fuzzy: bool, max_wildcard_chars: int = MAX_WILDCARD_CHARS
) -> tuple[str, Any]:
    """One attribute's MongoDB condition per PS3.4 C.2.2.2 matching rules; wildcards
    compile to patterns that cannot backtrack (imaging.wildcard)."""
    keyword, value = match.keyword, match.value
    if keyword in UID_KEYWORDS:
        uids = uid_list(value)
        if not uids:
            raise AccessError("MB-3011", f"{keyword} holds no valid UID")
        return keyword, uids[0] if len(uids) == 1 else {"$in": uids}
    vr = vr_of(keyword)
    if vr in ("DA", "TM", "DT") and "-" in value:
        low, _, high = value.partition("-")
        bounds: dict[str, str] = {}
        if low:
            bounds["$gte"] = low
        if high:
            bounds["$lte"] = high + ("235959.999999" if vr == "TM" else "")
        return keyword, bounds
    if vr in ("IS", "US", "UL", "SS", "SL"):
        if not re.fullmatch(r"-?\d+", value.strip()):
            raise AccessError("MB-3011", f"{keyword} needs an integer")
        return keyword, int(value)
    if vr == "PN" and fuzzy and keyword in FOLDED:
        # fuzzy: case- and accent-insensitive, matching the start of any name component
        stem = fold(value).strip("*")  # from the start of a component, any end
        pattern = compile_wildcard(stem, max_wildcard_chars).component_regex("^ =")
        return FOLDED[keyword], {"$regex": pattern}
    if has_wildcards(value):
        return keyword, {"$regex": compile_wildcard(value, max_wildcard_chars).regex()}
    return keyword, value


def _filters(query: Query) -> dict[str, Document]:
    """Per level, the filter of its own attributes (UID keys become `_id`/parent fields)."""
    per_level: dict[str, Document] = {"study": {}, "series": {}, "instance": {}}
    for match in query.matches:
        if match.value == "":
            continue  # universal matching: return the attribute, match everything
        keyword = "Modality" if match.keyword == "ModalitiesInStudy" else match.keyword
        level = _level_of(match.keyword) or "study"
        field_name, cond = condition(
            Match(keyword, match.value), query.fuzzy, query.max_wildcard_chars
        )
        if level == query.level:
            field_name = ID_FIELD.get(field_name, field_name)
        elif field_name in PARENT_FIELD.get(query.level, {}):
            per_level[query.level][PARENT_FIELD[query.level][field_name]] = cond
            continue
        else:
            field_name = ID_FIELD.get(field_name, field_name)
        per_level[level][field_name] = cond
    return per_level


MetaLoader = Callable[[Document], Awaitable[bytes]]


def index_query(query: Query) -> IndexQuery:
    """The search as the index's query description: each level's conditions; attributes
    of a level below the returned one select only for studies (ModalitiesInStudy and
    the other series attributes)."""
    filters = _filters(query)
    kept = ("study", "series", "instance") if query.level == "instance" else ("study", "series")
    per_level = {
        level: tuple(Condition(name, cond) for name, cond in filters[level].items())
        if level in kept
        else ()
        for level in ("study", "series", "instance")
    }
    return IndexQuery(
        _LEVEL[query.level],
        study=per_level["study"],
        series=per_level["series"],
        instance=per_level["instance"],
        offset=query.offset,
        limit=query.limit,
    )


_LEVEL: dict[str, Level] = {"study": "study", "series": "series", "instance": "instance"}


async def search(
    index: DicomIndex,
    query: Query,
    base_url: str,
    load_meta: MetaLoader | None = None,
    restriction: Restriction = UNRESTRICTED,
) -> SearchResult:
    """The matches the access may see, one page; `truncated` when the server's maximum
    cut the answer (counted over what the access may see)."""
    rows, truncated = await find(index, query, restriction)
    body = await render(index, query, rows, base_url, load_meta)
    return SearchResult(body, truncated)


async def find(
    index: DicomIndex, query: Query, restriction: Restriction = UNRESTRICTED
) -> tuple[list[Document], bool]:
    """One page of the rows the access may see (the one index query), and whether the
    server's maximum cut it."""
    compiled = compile_query(index_query(query), restriction)
    projection = None if query.include_all and query.level == "instance" else {"meta": 0}
    # one row past the limit tells whether the server's maximum cut the answer
    rows = await find_rows(index, compiled, projection, extra=1)
    truncated = len(rows) > query.limit and query.server_limited
    return rows[: query.limit], truncated


async def render(
    index: DicomIndex,
    query: Query,
    rows: list[Document],
    base_url: str,
    load_meta: MetaLoader | None,
) -> bytes:
    attrs = qido_attributes()
    if not rows:
        return b"[]"  # an empty $in makes the embedded store scan everything
    if query.level == "study":
        studies = {row["_id"]: row for row in rows}
    else:
        study_ids = sorted({row["st"] for row in rows})
        studies = await by_ids(index.studies, study_ids)
    series_docs: dict[str, Document] = {}
    if query.level == "instance" and rows:
        ids = sorted({row["se"] for row in rows})
        series_docs = await by_ids(index.series, ids)
    # a study's (and an instance row's series') attributes are the same for every row
    # under it: made once per answer, not once per row
    study_parts: dict[Any, Document] = {}
    series_parts: dict[Any, Document] = {}

    def study_part(study_id: Any) -> Document:
        part = study_parts.get(study_id)
        if part is None:
            study = studies.get(study_id, {})
            values: dict[str, Any] = {k: study.get(k) for k in attrs["study"] if k in study}
            values["StudyInstanceUID"] = study.get("_id")
            part = study_parts[study_id] = dataset(values, ordered=False)
        return part

    def series_part(series_id: Any) -> Document:
        part = series_parts.get(series_id)
        if part is None:
            series = series_docs.get(series_id, {})
            values = {k: series[k] for k in attrs["series"] if k in series}
            part = series_parts[series_id] = dataset(values, ordered=False)
        return part

    out = []
    turns = Turns()  # up to 1,000 rows of pure Python: the other doors get turns meanwhile
    for row in rows:
        await turns.take()
        values: dict[str, Any]
        if query.level == "study":  # the row is the study: nothing to share between rows
            item: Document = {}
            values = {k: row[k] for k in attrs["study"] if k in row}
            values["StudyInstanceUID"] = row["_id"]
            url = f"{base_url}/studies/{row['_id']}"
        else:
            item = dict(study_part(row["st"]))
            values = {}
            url = f"{base_url}/studies/{studies.get(row['st'], {}).get('_id')}"
        if query.level == "study":
            values["ModalitiesInStudy"] = row.get("mods", "")
            values["NumberOfStudyRelatedSeries"] = row.get("ns", 0)
            values["NumberOfStudyRelatedInstances"] = row.get("ni", 0)
        elif query.level == "series":
            values.update({k: row[k] for k in attrs["series"] if k in row})
            values["SeriesInstanceUID"] = row["_id"]
            values["NumberOfSeriesRelatedInstances"] = row.get("n", 0)
            url += f"/series/{row['_id']}"
        else:
            item.update(series_part(row["se"]))
            values.update({k: row[k] for k in attrs["instance"] if k in row})
            values["SeriesInstanceUID"], values["SOPInstanceUID"] = row["se"], row["_id"]
            url += f"/series/{row['se']}/instances/{row['_id']}"
        item.update(dataset(values, ordered=False))  # sorted once, below
        if "ModalitiesInStudy" in values:
            mods = values["ModalitiesInStudy"].split("\\") if values["ModalitiesInStudy"] else []
            item["00080061"] = {"vr": "CS", **({"Value": mods} if mods else {})}
        item["00081190"] = {"vr": "UR", "Value": [url]}
        if query.level == "instance" and (query.include_all or query.include):
            meta = row.get("meta") or (await load_meta(row) if load_meta else None)
            if meta:
                _include(item, orjson.loads(meta), query)
        out.append(dict(sorted(item.items())))
    return orjson.dumps(out)


def _include(item: Document, meta: Document, query: Query) -> None:
    if query.include_all:
        for tag, value in meta.items():
            if "BulkDataURI" not in value:
                item.setdefault(tag, value)
        return
    for keyword in query.include:
        wanted = tag_hex(keyword)
        if wanted and wanted in meta:
            item.setdefault(wanted, meta[wanted])


__all__ = ["Match", "Query", "attribute", "find", "parse_query", "render", "search"]
