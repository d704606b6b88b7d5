"""delete: a versioned tombstone; conditional delete by criteria (one match at most)."""

from __future__ import annotations

from access.errors import AccessError
from fhir_server.errors import information_outcome
from fhir_server.exchange import FhirExchange, FhirResponse
from fhir_server.interactions.common import check_id
from fhir_server.interactions.conditional import resolve_one
from fhir_server.interactions.restricted import check_write
from fhir_server.services import FhirServices


async def delete(exchange: FhirExchange, services: FhirServices) -> FhirResponse:
    route, request = exchange.route, exchange.request
    assert route is not None
    assert route.resource_type
    repository = services.repository
    if route.resource_id is None:
        if not request.query:
            raise AccessError("MB-1020", "a conditional delete needs search criteria")
        previous = await resolve_one(repository, route.resource_type, request.query, "delete")
    else:
        check_id(route.resource_id)
        previous = await repository.read(route.resource_type, route.resource_id)
    if previous is None or previous.deleted:
        return _answer(exchange, "nothing to delete", None)
    check_write(exchange, None, previous)
    stored = await repository.delete(previous)
    exchange.touched.append(f"{stored.resource_type}/{stored.id}")
    return _answer(exchange, f"deleted {stored.resource_type}/{stored.id}", f'W/"{stored.version}"')


def _answer(exchange: FhirExchange, message: str, etag: str | None) -> FhirResponse:
    headers = {"ETag": etag} if etag else {}
    prefer = (exchange.request.header("prefer") or "").lower()
    if "return=operationoutcome" in prefer:
        return FhirResponse.of(200, information_outcome(message), headers)
    return FhirResponse(204, None, headers)
