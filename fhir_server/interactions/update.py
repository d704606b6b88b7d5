"""update: PUT /{type}/{id} (create-on-update allowed), conditional PUT /{type}?criteria."""

from __future__ import annotations

import uuid
from typing import Any

from access.errors import AccessError
from fhir_server.exchange import FhirExchange, FhirResponse
from fhir_server.interactions.common import check_id, parse_etag, resource_body, write_response
from fhir_server.interactions.conditional import create_unless_found
from fhir_server.interactions.restricted import check_write
from fhir_server.repository import Stored
from fhir_server.server_meta import own_meta
from fhir_server.services import FhirServices


async def update(exchange: FhirExchange, services: FhirServices) -> FhirResponse:
    route, request = exchange.route, exchange.request
    assert route is not None
    assert route.resource_type
    resource = await resource_body(request, route.resource_type, services.budget)
    if route.resource_id is None:
        return await _conditional_update(exchange, services, resource)
    body_id = resource.get("id")
    if body_id is None:
        raise AccessError(
            "MB-1008", "an update must carry the resource id in the body", expression="id"
        )
    if body_id != route.resource_id:
        raise AccessError(
            "MB-1008",
            f"body id {body_id!r} does not match the URL id {route.resource_id!r}",
            expression=f"{route.resource_type}.id",
        )
    check_id(route.resource_id)
    previous = await services.repository.read(route.resource_type, route.resource_id)
    return await store_version(exchange, services, resource, previous)


async def store_version(
    exchange: FhirExchange,
    services: FhirServices,
    resource: dict[str, Any],
    previous: Stored | None,
) -> FhirResponse:
    """Write `resource` as the next version after `previous`, honouring If-Match."""
    request = exchange.request
    own_meta(resource, previous)  # the labels stay the replaced version's (mass assignment)
    check_write(exchange, resource, previous)
    if_match = request.header("if-match")
    check_if_match(if_match, previous, resource)
    try:
        stored = await services.repository.update(resource, previous)
    except AccessError as error:
        if if_match is None or error.code != "MB-1011":
            raise
        # the version If-Match named was replaced by a concurrent writer meanwhile
        raise AccessError("MB-1010", f"If-Match {if_match}: {error.diagnostics}") from error
    exchange.touched.append(f"{stored.resource_type}/{stored.id}")
    created = previous is None or previous.deleted
    return write_response(
        request, stored, 201 if created else 200, "created" if created else "updated"
    )


def check_if_match(if_match: str | None, previous: Stored | None, resource: dict[str, Any]) -> None:
    if if_match is None:
        return
    expected = parse_etag(if_match)
    current = previous.version if previous is not None and not previous.deleted else None
    if expected is None or expected != current:
        reference = f"{resource['resourceType']}/{resource.get('id')}"
        raise AccessError(
            "MB-1010",
            f"If-Match {if_match} but {reference} is at version {current or 'none'}",
        )


async def _conditional_update(
    exchange: FhirExchange, services: FhirServices, resource: dict[str, Any]
) -> FhirResponse:
    route, request = exchange.route, exchange.request
    assert route is not None
    assert route.resource_type
    repository = services.repository
    body_id = resource.get("id")
    if isinstance(body_id, str):
        check_id(body_id)
    replaced: list[Stored | None] = []

    async def write(claim: str) -> Stored:
        resource["id"] = body_id if isinstance(body_id, str) else str(uuid.uuid4())
        previous = await repository.read(resource["resourceType"], resource["id"])
        own_meta(resource, previous)
        check_write(exchange, resource, previous)
        check_if_match(request.header("if-match"), previous, resource)
        replaced.append(previous)
        return await repository.update(resource, previous, claim)

    stored, written = await create_unless_found(
        repository, route.resource_type, list(request.query), "update", write
    )
    if written:
        exchange.touched.append(f"{stored.resource_type}/{stored.id}")
        previous = replaced[-1]
        created = previous is None or previous.deleted
        status, message = (201, "created") if created else (200, "updated")
        return write_response(request, stored, status, message)
    if body_id is not None and body_id != stored.id:
        raise AccessError(
            "MB-1008",
            f"body id {body_id!r} differs from the matched resource {stored.id!r}",
            expression=f"{route.resource_type}.id",
        )
    resource["id"] = stored.id
    return await store_version(exchange, services, resource, stored)
