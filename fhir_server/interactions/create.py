"""create: POST /{type}, server-assigned id; conditional with If-None-Exist."""

from __future__ import annotations

import uuid

from fhir_server.exchange import FhirExchange, FhirResponse
from fhir_server.interactions.common import resource_body, write_response
from fhir_server.interactions.conditional import create_unless_found, criteria_params
from fhir_server.interactions.restricted import check_write
from fhir_server.repository import Stored
from fhir_server.server_meta import own_meta
from fhir_server.services import FhirServices


async def create(exchange: FhirExchange, services: FhirServices) -> FhirResponse:
    route, request = exchange.route, exchange.request
    assert route is not None
    assert route.resource_type
    resource = await resource_body(request, route.resource_type, services.budget)
    own_meta(resource, None)  # a client's security labels are not taken (mass assignment)
    if_none_exist = request.header("if-none-exist")
    if not if_none_exist:
        new_id = str(uuid.uuid4())
        check_write(exchange, resource, None, new_id)
        stored = await services.repository.create(resource, new_id)
        exchange.touched.append(f"{stored.resource_type}/{stored.id}")
        return write_response(request, stored, 201, "created")

    async def write(claim: str) -> Stored:
        new_id = str(uuid.uuid4())
        check_write(exchange, resource, None, new_id)
        return await services.repository.create(resource, new_id, claim)

    stored, created = await create_unless_found(
        services.repository,
        route.resource_type,
        criteria_params(if_none_exist),
        "create",
        write,
    )
    if not created:
        check_write(exchange, None, stored)  # the match is answered: it must be allowed
    exchange.touched.append(f"{stored.resource_type}/{stored.id}")
    if created:
        return write_response(request, stored, 201, "created")
    return write_response(request, stored, 200, "a matching resource already exists")
