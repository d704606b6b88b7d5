"""The FHIR router: parse what a request asks, run it through the pipeline, dispatch.

It knows nothing about HTTP: the FastAPI adapter and bundle entries both hand it a
`FhirRequest` and get a `FhirResponse` back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from access.access import Access, Action
from access.context import RequestContext
from access.errors import AccessError
from access.restriction import UNRESTRICTED, Restriction
from fhir_server import store_errors
from fhir_server.access import BODY_WRITES, fhir_access, may_name_patients, written_patients
from fhir_server.body_pool import POOLED_BYTES
from fhir_server.errors import challenge, outcome
from fhir_server.exchange import FhirExchange, FhirPipeline, FhirRequest, FhirResponse, Route
from fhir_server.formats import check_acceptable, pretty, wants_pretty
from fhir_server.interactions.batch import bundle_handler
from fhir_server.interactions.capabilities import capabilities
from fhir_server.interactions.common import off_loop, parsed_body
from fhir_server.interactions.create import create
from fhir_server.interactions.delete import delete
from fhir_server.interactions.history import history
from fhir_server.interactions.patch import patch
from fhir_server.interactions.read import read, vread
from fhir_server.interactions.search import everything, search
from fhir_server.interactions.update import update
from fhir_server.registry import Interaction, is_served
from fhir_server.services import FhirServices

Handler = Callable[[FhirExchange, FhirServices], Awaitable[FhirResponse]]

HANDLERS: dict[Interaction, Handler] = {
    Interaction.READ: read,
    Interaction.VREAD: vread,
    Interaction.CREATE: create,
    Interaction.UPDATE: update,
    Interaction.PATCH: patch,
    Interaction.DELETE: delete,
    Interaction.HISTORY_INSTANCE: history,
    Interaction.HISTORY_TYPE: history,
    Interaction.HISTORY_SYSTEM: history,
    Interaction.SEARCH_TYPE: search,
    Interaction.OPERATION: everything,
    Interaction.CAPABILITIES: capabilities,
}


class FhirRouter:
    def __init__(self, services: FhirServices) -> None:
        self.services = services
        self.pipeline = FhirPipeline(
            self._prepare, self._act, render_error, explain=store_errors.as_access_error
        )
        # bundle entries re-enter this router (and so the whole pipeline) one by one
        bundles = bundle_handler(self.handle)
        self.handlers = {
            **HANDLERS,
            Interaction.BATCH: bundles,
            Interaction.TRANSACTION: bundles,
        }

    async def handle(
        self,
        request: FhirRequest,
        context: RequestContext,
        parent: Access | None = None,
        restriction: Restriction = UNRESTRICTED,
    ) -> FhirResponse:
        """`restriction`: what the access this one is part of may see (a bundle entry
        gets its Bundle's); hooks can narrow it further, never widen it."""
        if request.named_patients is None and _writes_a_large_body(request):
            request.named_patients = await _named_patients(request)
        if request.document is None and _posts_a_bundle(request):
            request.document = await self._bundle_document(request)
        exchange = FhirExchange(
            request, context, parent=parent or context.access, restriction=restriction
        )
        response = await self.pipeline.handle(exchange)
        if response.body is not None and wants_pretty(request):
            response.body = pretty(response.body)
        return response

    async def _bundle_document(self, request: FhirRequest) -> Any:
        """The parsed Bundle, or None when the body cannot be parsed: the bundle handler
        then parses it again inside the pipeline and answers the error there."""
        try:
            return await parsed_body(request, self.services.budget)
        except AccessError:
            return None

    def _prepare(self, exchange: FhirExchange) -> None:
        check_acceptable(exchange.request)
        if exchange.context.patient is not None:
            # a patient-context token sees its own compartment: the same restriction a
            # hook would set, so every interaction compiles it one way
            exchange.narrow(Restriction(patients=frozenset({exchange.context.patient})))
        exchange.route = parse_route(exchange.request)
        exchange.access = fhir_access(
            exchange.request, exchange.route, exchange.context, exchange.parent
        )

    async def _act(self, exchange: FhirExchange) -> FhirResponse:
        assert exchange.route is not None
        handler = self.handlers.get(exchange.route.interaction)
        if handler is None:
            raise AccessError("MB-1013", f"{exchange.route.interaction} is not supported yet")
        return await handler(exchange, self.services)


def render_error(exchange: FhirExchange, error: AccessError) -> FhirResponse:
    return FhirResponse.of(error.status, outcome(error), challenge(error))


def parse_route(request: FhirRequest) -> Route:
    """Method + path -> the interaction asked for, per the FHIR RESTful API."""
    method = request.method.upper()
    parts = [p for p in request.path.strip("/").split("/") if p]
    if not parts:
        return _system(method, request)
    head = parts[0]
    if head == "metadata" and len(parts) == 1 and method == "GET":
        return Route(Interaction.CAPABILITIES)
    if head == "_history" and len(parts) == 1 and method == "GET":
        return Route(Interaction.HISTORY_SYSTEM)
    if not is_served(head):
        raise AccessError("MB-1001", f"resource type {head[:64]!r} is not served here")
    return _typed(method, head, parts[1:], request)


def _posts_a_bundle(request: FhirRequest) -> bool:
    return request.method.upper() == "POST" and not request.path.strip("/")


def _system(method: str, request: FhirRequest) -> Route:
    if method == "POST":
        document = request.document
        kind = document.get("type") if isinstance(document, dict) else None
        return Route(Interaction.TRANSACTION if kind == "transaction" else Interaction.BATCH)
    raise AccessError("MB-1013", f"{method} on the service base is not supported")


def _typed(method: str, resource_type: str, rest: list[str], request: FhirRequest) -> Route:
    n = len(rest)
    if n == 0:
        by_method = {
            "GET": Interaction.SEARCH_TYPE,
            "POST": Interaction.CREATE,
            "PUT": Interaction.UPDATE,
            "PATCH": Interaction.PATCH,
            "DELETE": Interaction.DELETE,
        }
        interaction = by_method.get(method)
        if interaction is None:
            raise AccessError("MB-1013", f"{method} /{resource_type} is not supported")
        if interaction in (Interaction.UPDATE, Interaction.PATCH) and not request.query:
            raise AccessError(
                "MB-1020", f"{method} /{resource_type} needs an id or search criteria"
            )
        return Route(interaction, resource_type)
    if n == 1 and rest[0] == "_search" and method == "POST":
        return Route(Interaction.SEARCH_TYPE, resource_type)
    if n == 1 and rest[0] == "_history" and method == "GET":
        return Route(Interaction.HISTORY_TYPE, resource_type)
    resource_id = rest[0]
    if n == 1:
        by_method = {
            "GET": Interaction.READ,
            "PUT": Interaction.UPDATE,
            "PATCH": Interaction.PATCH,
            "DELETE": Interaction.DELETE,
        }
        interaction = by_method.get(method)
        if interaction is None:
            raise AccessError("MB-1013", f"{method} on a resource instance is not supported")
        return Route(interaction, resource_type, resource_id)
    if n == 2 and method == "GET" and resource_type == "Patient" and is_served(rest[1]):
        return Route(Interaction.SEARCH_TYPE, rest[1], compartment=resource_id)
    if n == 2 and rest[1] == "$everything" and method in ("GET", "POST"):
        return Route(Interaction.OPERATION, resource_type, resource_id, operation=rest[1])
    if rest[1] == "_history" and method == "GET":
        if n == 2:
            return Route(Interaction.HISTORY_INSTANCE, resource_type, resource_id)
        if n == 3:
            return Route(Interaction.VREAD, resource_type, resource_id, rest[2])
    raise AccessError("MB-1002", f"no FHIR interaction at {method} /{request.path[:200]}")


def _writes_a_large_body(request: FhirRequest) -> bool:
    return (
        request.method in ("POST", "PUT")
        and request.body is not None
        and len(request.body) >= POOLED_BYTES
        and request.path.strip("/") != ""
    )


async def _named_patients(request: FhirRequest) -> frozenset[str] | None:
    """The Patients a large create or update body names, found on the body worker; None
    when the route is not such a write (or not valid: the pipeline answers that)."""
    try:
        route = parse_route(request)
    except AccessError:
        return None
    if route.resource_type is None or Action(route.interaction.value) not in BODY_WRITES:
        return None
    if not may_name_patients(route.resource_type):
        return frozenset()  # not worth the body's trip to the worker (a 10 MiB Binary)
    assert request.body is not None
    found = await off_loop(len(request.body), written_patients, route.resource_type, request.body)
    return frozenset(found)
