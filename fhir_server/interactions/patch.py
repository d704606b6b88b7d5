"""patch: JSON Patch (RFC 6902) on /{type}/{id} or conditionally on /{type}?criteria."""

from __future__ import annotations

from typing import Any

import jsonpatch
import jsonpointer
import orjson

from fhir_server.errors import FhirError
from fhir_server.exchange import FhirResponse
from fhir_server.interactions.common import check_valid, parse_body
from fhir_server.interactions.conditional import resolve_one
from fhir_server.interactions.update import check_if_match, store_version
from fhir_server.pipeline import Exchange
from fhir_server.services import FhirServices


async def patch(exchange: Exchange, services: FhirServices) -> FhirResponse:
    route, request = exchange.route, exchange.request
    assert route is not None
    assert route.resource_type
    content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/json-patch+json":
        raise FhirError(
            "MB-1014",
            f"PATCH needs Content-Type application/json-patch+json, not {content_type or 'none'!r}",
        )
    operations = parse_body(request)
    if not isinstance(operations, list):
        raise FhirError("MB-1005", "a JSON Patch document is a JSON array of operations")
    if route.resource_id is None:
        previous = await resolve_one(
            services.repository, route.resource_type, request.query, "patch"
        )
        reference = f"{route.resource_type}?{'&'.join(f'{k}={v}' for k, v in request.query)}"
    else:
        previous = await services.repository.read(route.resource_type, route.resource_id)
        reference = f"{route.resource_type}/{route.resource_id}"
    if previous is None:
        raise FhirError("MB-1002", f"{reference} is not known")
    if previous.raw is None:
        raise FhirError("MB-1003", f"{reference} was deleted")
    current: dict[str, Any] = orjson.loads(previous.raw)
    check_if_match(request.header("if-match"), previous, current)
    patched = _apply(current, operations)
    if patched.get("resourceType") != route.resource_type or patched.get("id") != previous.id:
        raise FhirError("MB-1017", "a patch may not change resourceType or id", expression="id")
    check_valid(patched)
    return await store_version(exchange, services, patched, previous)


def _apply(resource: dict[str, Any], operations: list[Any]) -> dict[str, Any]:
    try:
        # apply_patch works on a deep copy of its own (in_place=False)
        patched = jsonpatch.apply_patch(resource, operations)
    except (
        jsonpatch.JsonPatchException,
        jsonpointer.JsonPointerException,
        TypeError,
        KeyError,
        IndexError,
        ValueError,
    ) as error:
        raise FhirError("MB-1017", f"JSON Patch failed: {error}") from error
    if not isinstance(patched, dict):
        raise FhirError("MB-1017", "the patch did not leave a resource")
    return patched
