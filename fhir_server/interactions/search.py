"""search-type: GET /{type}?params and POST /{type}/_search, as a searchset Bundle."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import orjson
from pymongo import DESCENDING

from fhir_server.bundle import bundle
from fhir_server.errors import FhirError
from fhir_server.exchange import FhirResponse
from fhir_server.interactions.history import _int_param
from fhir_server.pipeline import Exchange
from fhir_server.search.criteria import IGNORED
from fhir_server.services import FhirServices

DEFAULT_COUNT = 20
MAX_COUNT = 1000


async def search(exchange: Exchange, services: FhirServices) -> FhirResponse:
    route, request = exchange.route, exchange.request
    assert route is not None
    assert route.resource_type
    params = list(request.query)
    if request.method == "POST" and request.body:
        content_type = (request.header("content-type") or "").split(";")[0].strip()
        if content_type != "application/x-www-form-urlencoded":
            raise FhirError("MB-1014", "POST _search takes application/x-www-form-urlencoded")
        params += parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True)
    count = max(0, min(_int_param(_get(params, "_count"), "_count", DEFAULT_COUNT), MAX_COUNT))
    offset = _int_param(_get(params, "_getpagesoffset"), "_getpagesoffset", 0)
    criteria = [(k, v) for k, v in params if k not in IGNORED and not k.startswith("_getpages")]
    collection = services.repository.db[route.resource_type]
    query: dict[str, object] = {"raw": {"$ne": None}}
    if criteria:
        ids = await services.repository.matching_ids(route.resource_type, criteria)
        query["_id"] = {"$in": ids}
    total = await collection.count_documents(query)
    cursor = collection.find(query, {"raw": 1}).sort([("lu", DESCENDING), ("_id", DESCENDING)])
    docs = [doc async for doc in cursor.skip(offset).limit(count)]
    base = f"{request.base_url}/{route.resource_type}"
    entries = [
        {
            "fullUrl": f"{request.base_url}/{route.resource_type}/{doc['_id']}",
            "resource": orjson.Fragment(doc["raw"]),
            "search": {"mode": "match"},
        }
        for doc in docs
    ]
    exchange.touched.extend(f"{route.resource_type}/{doc['_id']}" for doc in docs)
    applied = [*criteria, ("_count", str(count))]
    links = [("self", f"{base}?{urlencode([*applied, ('_getpagesoffset', str(offset))])}")]
    if offset + count < total:
        links.append(
            ("next", f"{base}?{urlencode([*applied, ('_getpagesoffset', str(offset + count))])}")
        )
    if offset > 0:
        prior = max(0, offset - count)
        links.append(
            ("previous", f"{base}?{urlencode([*applied, ('_getpagesoffset', str(prior))])}")
        )
    return FhirResponse(200, bundle("searchset", entries, links, total))


def _get(params: list[tuple[str, str]], name: str) -> str | None:
    for key, value in params:
        if key == name:
            return value
    return None
