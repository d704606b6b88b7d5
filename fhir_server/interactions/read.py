"""read and vread: serve the stored bytes; 304 on If-None-Match / If-Modified-Since."""

from __future__ import annotations

from access.errors import AccessError
from access.shown import Shown
from fhir_server.exchange import FhirExchange, FhirResponse
from fhir_server.interactions.common import (
    http_date,
    parse_etag,
    parse_http_date,
)
from fhir_server.interactions.restricted import check_read
from fhir_server.repository import Stored
from fhir_server.services import FhirServices
from fhir_server.shown import item, not_shown, show


async def read(exchange: FhirExchange, services: FhirServices) -> FhirResponse:
    route = exchange.route
    assert route is not None
    assert route.resource_type
    assert route.resource_id
    stored = await services.repository.read(route.resource_type, route.resource_id)
    return _answer(exchange, stored, f"{route.resource_type}/{route.resource_id}")


async def vread(exchange: FhirExchange, services: FhirServices) -> FhirResponse:
    route = exchange.route
    assert route is not None
    assert route.resource_type
    assert route.resource_id
    reference = f"{route.resource_type}/{route.resource_id}/_history/{route.version_id}"
    if not (route.version_id or "").isdigit():
        raise AccessError("MB-1002", f"{reference} does not exist")
    stored = await services.repository.vread(
        route.resource_type, route.resource_id, int(route.version_id or 0)
    )
    return _answer(exchange, stored, reference)


def _answer(exchange: FhirExchange, stored: Stored | None, reference: str) -> FhirResponse:
    if stored is None:
        raise AccessError("MB-1002", f"{reference} is not known")
    check_read(exchange, stored, reference)
    headers = {"ETag": f'W/"{stored.version}"', "Last-Modified": http_date(stored.last_updated_ms)}
    if stored.raw is None:
        raise AccessError("MB-1003", f"{reference} was deleted (version {stored.version})")
    exchange.touched.append(f"{stored.resource_type}/{stored.id}")
    if exchange.showing:
        shown = [item(stored.resource_type, stored.id, stored.raw)]

        def build(items: Shown[FhirResponse]) -> FhirResponse:
            if not items.visible:
                raise not_shown(reference)
            return _served(exchange, stored, headers)

        return show(exchange, shown, build)
    return _served(exchange, stored, headers)


def _served(exchange: FhirExchange, stored: Stored, headers: dict[str, str]) -> FhirResponse:
    if _not_modified(exchange, stored):
        return FhirResponse(304, None, headers)
    return FhirResponse(200, stored.raw, headers)


def _not_modified(exchange: FhirExchange, stored: Stored) -> bool:
    request = exchange.request
    if_none_match = request.header("if-none-match")
    if if_none_match is not None:
        return any(parse_etag(tag) == stored.version for tag in if_none_match.split(","))
    if_modified_since = request.header("if-modified-since")
    if if_modified_since is not None:
        since = parse_http_date(if_modified_since)
        # HTTP dates have whole seconds: compare at that precision
        return since is not None and stored.last_updated_ms // 1000 <= since // 1000
    return False
